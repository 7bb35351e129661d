// Scheduler: a module's wall-clock plan, carried out by the node that runs the VM.
//
// Two kinds of job:
//   - scheduled failback (`failback.mode: scheduled`): at each time of the cron `schedule`, in
//     `failback.timezone`, the VM moves back to the preferred node if it runs on the other one;
//   - one-off swaps (`vmha swap MODULE --at TIME`): at TIME the VM moves to the node named when
//     the swap was scheduled (the one that did not run it then).
//
// Who acts: only the node that runs the VM (ALONE or PRIM), and a swap is the runner's own
// hand-over; so a job never runs on both nodes at once. A job is skipped, with its reason
// recorded, when it is unsafe (the peer is not SECOND and UpToDate, a resync runs, the module is
// stopped) or pointless (the VM already runs there).
//
// Both nodes hold the same one-off swaps: vmhad sends its list to the peer when it changes and
// whenever the control channel comes up, and merge() takes the peer's. An entry's outcome only
// moves forward (pending → cancelled → skipped → failed → done), so merging in any order
// converges, and a swap one node ran is never undone by a cancellation the other took meanwhile.
//
// Time: tick(now) every second with the wall-clock time (a virtual clock in tests). A job that
// fell due while vmhad was not running is carried out late by at most `late_limit`; older ones
// are recorded as missed. Cron times inside a DST gap fire at the jump; a time that occurs twice
// (the fall-back hour) fires once, at its first occurrence.
//
// Threading: the runner's executor; not thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <vmha/config/cron.h>
#include <vmha/config/timezone.h>
#include <vmha/module/ports.h>

namespace vmha::module {

using SysSeconds = config::SysSeconds;

// Ordered: an outcome only ever moves to a later one (not_needed is final, like skipped).
enum class JobOutcome : std::uint8_t { pending, cancelled, not_needed, skipped, failed, done };
std::string_view to_string(JobOutcome o);

struct ScheduledSwap {
    std::string id;
    SysSeconds at{};
    std::string to;  // the node the VM moves to
    std::string by;  // who scheduled it ("root (uid 0) on hv1")
    SysSeconds created{};
    JobOutcome outcome = JobOutcome::pending;
    std::string reason;      // why it was skipped, failed or cancelled
    std::string settled_by;  // the node that settled it
    SysSeconds settled{};
};

// One handled job, for `vmha schedule` and the journal.
struct ScheduleEvent {
    SysSeconds due{};
    std::string job;  // "failback to hv1", "swap 3f9c2a1b to hv2"
    JobOutcome outcome = JobOutcome::pending;
    std::string reason;
    SysSeconds at{};  // when it was settled
};

struct SchedulerConfig {
    std::string module;
    std::string self;
    std::string peer;
    std::optional<config::CronSchedule> failback;  // failback.mode scheduled
    std::string preferred;                         // failback.preferred_node
    config::TimeZone zone = config::TimeZone::utc();
    std::chrono::seconds late_limit{300};
    std::chrono::hours keep_settled{24 * 30};  // settled one-off swaps are forgotten after this
    std::size_t history = 50;                  // events kept
    std::chrono::seconds save_mark_every{60};  // how often the "checked until" mark is saved
};

// What the scheduler needs of its module.
class SchedulePort {
public:
    virtual ~SchedulePort() = default;
    virtual bool runs_vm() const = 0;       // ALONE or PRIM here
    virtual bool peer_runs_vm() const = 0;  // as the peer last reported
    virtual Status swap_refusal() const = 0;  // why a swap now is unsafe; ok if it is safe
    virtual void swap(Done done) = 0;         // done once the VM runs on the peer, or failed
    virtual void record(const ScheduleEvent& event) = 0;  // log it (daemon log, journal)
    virtual void changed() = 0;  // the one-off swaps changed: tell the peer
};

class ScheduleStore {
public:
    virtual ~ScheduleStore() = default;
    virtual Result<std::optional<nlohmann::json>> load() = 0;  // nullopt: never saved
    virtual Status save(const nlohmann::json& plan) = 0;
};

class Scheduler {
public:
    Scheduler(SchedulerConfig config, SchedulePort& port, ScheduleStore& store);
    ~Scheduler() { *alive_ = false; }
    Scheduler(const Scheduler&) = delete;
    Scheduler& operator=(const Scheduler&) = delete;

    // Reads the saved plan (an unreadable one is an error: nothing is guessed).
    Status load(SysSeconds now);
    void tick(SysSeconds now);

    // `vmha swap MODULE --at WHEN`: to the node that does not run the VM now (`to`).
    Result<ScheduledSwap> add_swap(std::string id, SysSeconds at, std::string to, std::string by,
                                   SysSeconds now);
    // `vmha schedule cancel MODULE ID`: only a pending swap.
    Result<ScheduledSwap> cancel(const std::string& id, const std::string& by, SysSeconds now);
    // The operator's time: "YYYY-MM-DD HH:MM[:SS]" in the module's zone (refused in a DST gap,
    // and in an overlap unless an offset says which), the same followed by "Z" or "+HH:MM",
    // or "+DURATION" from now ("+90s", "+2h").
    Result<SysSeconds> parse_when(std::string_view text, SysSeconds now) const;

    std::vector<SysSeconds> next_failbacks(SysSeconds after, int count) const;
    const std::vector<ScheduledSwap>& swaps() const { return swaps_; }
    const std::deque<ScheduleEvent>& history() const { return history_; }
    // For `vmha schedule`: the zone, the next failback times, the swaps, the history.
    nlohmann::json plan_json(SysSeconds now) const;
    // The peer's one-off swaps ({"swaps": [...]}); malformed entries are ignored and counted.
    // Returns how many entries it took or advanced.
    Result<int> merge(const nlohmann::json& message, SysSeconds now);
    nlohmann::json sync_message() const;

    // One firing instant strictly after `t` (see the header comment for DST).
    std::optional<SysSeconds> next_fire_after(SysSeconds t) const;

private:
    void handle_failback(SysSeconds due, SysSeconds now, std::size_t missed);
    void handle_swap(ScheduledSwap& s, SysSeconds now);
    void settle(ScheduledSwap& s, JobOutcome o, std::string reason, SysSeconds now);
    void run_swap(std::string job, SysSeconds due, std::string swap_id);
    void event(SysSeconds due, std::string job, JobOutcome o, std::string reason, SysSeconds now);
    void save();
    void sort_swaps();  // by time, then id: the same order on both nodes
    nlohmann::json to_json() const;
    nlohmann::json swaps_json() const;

    SchedulerConfig config_;
    SchedulePort& port_;
    ScheduleStore& store_;
    std::vector<ScheduledSwap> swaps_;
    std::deque<ScheduleEvent> history_;
    std::optional<SysSeconds> checked_until_;  // failback times up to here are handled
    std::optional<SysSeconds> saved_mark_;     // checked_until_ as last saved
    bool in_flight_ = false;
    SysSeconds now_{};  // the last tick's time (for completions)
    // Set to false in the destructor: a swap's completion arriving later must not touch *this.
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace vmha::module
