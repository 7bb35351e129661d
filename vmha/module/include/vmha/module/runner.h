// ModuleRunner: one mirror module on one node, driving imagesyncd, the VM and the peer
// coordination from decide() (decide.h).
//
// Everything it learns (peer reports, heartbeat verdicts, imagesync status, VM health,
// checkers, operator commands, timers) lands in its fields; then evaluate() takes a Snapshot,
// decides, and carries the decision out through the ports (ports.h). One effect runs at a
// time: while a transition's steps are in flight, new inputs are recorded and decided on once
// it completes. Each transition is logged with its rule and reason through the Observer.
//
// Transition effects (from → to), the second table of the module:
//
// | from \ to     | STOP                  | WAIT / SECOND                 | ALONE / PRIM            |
// |---------------|-----------------------|-------------------------------|-------------------------|
// | STOP          | —                     | run imagesyncd, connect       | (via WAIT)              |
// | WAIT / SECOND | stop imagesyncd       | connect                       | promote, start the VM   |
// | ALONE / PRIM  | stop VM, imagesyncd   | stop VM, demote, connect      | — (label only)          |
//
// Threading: owned by one executor (the daemon loop or the simulation); every port delivers
// its completions there. Not thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include <vmha/module/decide.h>
#include <vmha/module/ports.h>
#include <vmha/module/restart_budget.h>

namespace vmha::module {

struct RunnerConfig {
    std::string module;
    std::string self;
    std::string peer;
    bool preferred = false;
    Duration poll{1000};              // imagesync status, VM health, report resend
    Duration startup_grace{8000};     // peer unheard this long after start: "silent since start"
    Duration handover_timeout{60000}; // a hand-over the peer does not take is withdrawn
    Duration imagesync_settle{10000}; // a (re)started imagesyncd gets this long to reach its peer
    Duration refused_retry{5000};     // a refused replication handshake is tried again this often
    Duration fence_retry{10000};      // a failed fencing hook is run again this long after
    Duration heartbeat_timeout{1500};   // heartbeat.timeout
    Duration replication_timeout{1500}; // replication.timeout
    Duration heartbeat_interval{500};   // heartbeat.interval
    std::uint64_t claim_seed = 0;       // mixed into claim ids (vmhad: random per run)
    unsigned restart_attempts = 3;
    Duration restart_window{24 * 3600 * 1000};
    bool automatic_failback = false;  // to the peer, when it is the preferred node
    Duration failback_stable{300000};
    // A witness (the module's `witness` section): the lease rules (decide.h rules 65, 66;
    // docs/witness.md). Absent: no lease, the runner behaves as without a witness.
    struct Lease {
        Duration ttl{10000};      // witness.lease
        lease::LeaseTiming timing;  // witness.margin, the clock drift bound
    };
    std::optional<Lease> lease;
};

// With a witness: how long a running node trusts its peer's last agreeing report (heartbeat
// timeout + poll), and how long a node waits after its own last agreeing report before it starts
// the VM by the lease (the peer has stopped writing on that report's word by then, margin and
// clock drift counted). docs/witness.md gives the formulas.
Duration agreement_window(const RunnerConfig& c);
Duration hold_off(const RunnerConfig& c);

enum class CheckerAction : std::uint8_t { restart, failover, wait };

class Observer {
public:
    virtual ~Observer() = default;
    virtual void transition(State from, State to, int rule, const std::string& reason) = 0;
    virtual void note(const std::string& what) = 0;   // an effect's failure, a refusal
    // Just before the VM is started on this node (the simulation checks its data here).
    virtual void starting_vm() {}
};

class ModuleRunner {
public:
    // `lease` is required when config.lease is set (and ignored otherwise).
    ModuleRunner(RunnerConfig config, Clock& clock, ImagesyncPort& imagesync, VmPort& vm,
                 PeerPort& peer, Store& store, Observer& observer, LeasePort* lease = nullptr,
                 FencePort* fence = nullptr);
    ~ModuleRunner();
    ModuleRunner(const ModuleRunner&) = delete;
    ModuleRunner& operator=(const ModuleRunner&) = delete;

    // Loads the persisted state and begins: polls, reports, decides.
    void start();

    // Inputs.
    void on_peer_liveness(Liveness liveness);
    void on_peer_channel(bool up);
    void on_peer_message(const nlohmann::json& message);
    void on_peer_refused(std::string reason);
    void on_vm_health(VmHealth health, std::string reason);  // events and polls
    void on_checker(const std::string& name, CheckerAction action, bool failed, std::string reason);

    // Operator commands.
    Status op_start();
    // Stops the module here: done once it is in STOP (the VM and imagesyncd stopped), or with
    // an error if it could not be saved or was started again meanwhile.
    void op_stop(Done done);
    void op_swap(Done done);
    // Why a swap now would be refused (the VM does not run here, or the peer is not SECOND,
    // UpToDate, fit and in sync, or a resync runs); ok if it would go ahead.
    Status swap_refusal() const;
    // Restarts the VM where it runs (graceful stop, start), no failover; refused elsewhere.
    void op_restart(Done done);
    // `vmha prim [--force]`: run the VM on this node. Refused while the peer runs it, and
    // without `force` unless this copy is UpToDate and not older than the peer's; with `force`,
    // imagesync's forced promotion first (the module must be started). Done once decided on.
    void op_prim(bool force, Done done);
    // What `prim --force` would discard (for the operator's confirmation).
    nlohmann::json prim_preview() const;
    // Why op_prim(force) would be refused now; ok if it would not.
    Status prim_refusal(bool force) const;
    // `vmha second`: start (if stopped) and wait for the peer to run the VM; never take it here
    // until the peer has run it.
    Status op_second();
    // `vmha failover on|off` (persisted): whether this node may take the VM over from its peer.
    Status op_failover(bool on);
    bool failover() const { return persisted_.failover; }

    State state() const { return state_; }
    const std::string& reason() const { return reason_; }
    bool busy() const { return busy_; }
    const ImagesyncStatus& imagesync() const { return imagesync_; }
    nlohmann::json status_json() const;
    // The report this node sends its peer (also in status_json's "self").
    nlohmann::json report() const;
    // The peer's last report, over a channel that is up, says it runs the VM (ALONE or PRIM).
    bool peer_runs_vm() const { return channel_up_ && report_ && runs_vm(report_->state); }

private:
    void poll();
    void retry_soon();
    bool imagesync_settling() const;  // re-evaluate before the next poll (a failover's promotion refused)
    void evaluate();
    Snapshot snapshot() const;
    void apply(const Decision& d);
    void stop_vm(const Decision& d, Done done);  // powered off for rule 65, else a graceful stop
    void finish(State next, const Decision& d);
    void fail_effect(const std::string& what, const Status& status);
    void send_report();
    void refresh_imagesync(std::function<void()> then);
    void check_vm();
    void reattach();
    void read_report(const nlohmann::json& message);
    void repromote();
    void demote_if_idle();
    void retry_refused_link();
    void release_fence();
    void remember_data();
    Standing standing() const;
    // The lease (config_.lease only).
    bool lease_held() const;
    bool peer_agrees() const;
    bool may_write() const;  // keep writing: the lease held or the peer agreeing (or no witness)
    void lease_ask(std::function<void()> then);
    void lease_tick();
    void release_lease();
    void self_fence();
    void extend_write_lease(bool force);
    void schedule_lease_wake();
    DataState data_here() const;  // imagesync's, or the last known while it is down
    bool current_with_peer() const;

    RunnerConfig config_;
    Clock& clock_;
    ImagesyncPort& imagesync_port_;
    VmPort& vm_;
    PeerPort& peer_;
    Store& store_;
    Observer& observer_;

    bool started_ = false;
    State state_ = State::stop;
    std::string reason_ = "not started";
    int rule_ = 0;
    Persisted persisted_;
    TimePoint started_at_{};

    ImagesyncStatus imagesync_;
    Liveness liveness_ = Liveness::unknown;
    bool channel_up_ = false;
    bool current_when_lost_ = false;
    std::optional<TimePoint> last_in_sync_;
    std::uint64_t last_instance_ = 0;  // imagesyncd's pid at the last status
    std::optional<PeerReport> report_;
    std::string peer_reason_;
    std::optional<imagesync::meta::Generations> peer_generations_;
    bool peer_crashed_primary_ = false;
    std::optional<std::string> refused_;

    std::uint64_t claim_counter_ = 0;
    std::uint64_t own_claim_ = 0;
    std::uint64_t granted_ = 0;
    bool handing_over_ = false;
    TimePoint handing_over_since_{};
    std::optional<TimePoint> peer_eligible_since_;

    struct CheckerState {
        CheckerAction action = CheckerAction::restart;
        bool failed = false;
        std::string reason;
    };
    std::map<std::string, CheckerState> checkers_;
    std::optional<std::string> vm_failed_;
    RestartBudget budget_;
    bool swap_requested_ = false;
    std::deque<Done> swap_waiters_;
    std::deque<Done> stop_waiters_;
    bool operator_prim_ = false;    // `vmha prim`, until the VM runs here or the peer runs it
    bool operator_second_ = false;  // `vmha second`, until the peer runs the VM
    std::uint64_t peer_dirty_bytes_ = 0;  // as the peer last reported
    bool restarting_ = false;       // `vmha restart` in progress

    bool busy_ = false;
    bool pending_ = false;
    bool resuming_ = false;
    bool status_pending_ = false;
    std::uint64_t transitions_ = 0;  // answers asked for before a transition are stale
    bool vm_paused_io_ = false;
    TimePoint imagesync_up_since_{};
    bool imagesync_reached_peer_ = false;  // this imagesyncd instance has had a link to the peer
    TimePoint last_connect_retry_{};
    bool outdating_ = false;
    bool repromoting_ = false;
    bool demoting_ = false;
    bool releasing_fence_ = false;

    // The fencing hook (rule 67).
    void start_fence();
    FencePort* fence_port_ = nullptr;
    bool fence_running_ = false;
    bool peer_fenced_ = false;                 // since the peer was last heard
    std::optional<std::string> fence_failed_;  // the last failure, until the peer is heard
    TimePoint fence_failed_at_{};
    std::uint64_t fence_epoch_ = 0;            // bumped when the peer is heard: late answers are stale
    std::unique_ptr<Clock::Token> fence_retry_timer_;

    // The lease (with a witness).
    LeasePort* lease_port_ = nullptr;
    std::optional<lease::LeaseView> lease_view_;
    bool lease_pending_ = false;
    bool lease_granted_ = false;       // granted since the last release: release when idle
    bool releasing_lease_ = false;
    TimePoint release_retry_at_{};
    int lease_answer_kind_ = -1;       // what the witness last said (for notes on change only)
    std::string lease_why_ = "the witness has not been asked yet";
    bool contending_ = false;          // reported: this node seeks the lease to run the VM
    std::optional<TimePoint> agreeing_in_;  // the peer's last agreeing report, received
    TimePoint agreeing_out_{};         // this node's last agreeing report, sent (start counts)
    bool lease_fencing_ = false;
    bool write_lease_unsupported_ = false;
    TimePoint write_lease_until_{};
    std::unique_ptr<Clock::Token> lease_timer_;
    std::unique_ptr<Clock::Token> lease_wake_;
    TimePoint lease_wake_at_{};
    std::optional<TimePoint> peer_last_heard_;  // when the peer was lost: about when it was last heard
    bool peer_renewed_since_lost_ = false;
    std::optional<TimePoint> peer_lost_at_;  // when the peer was found lost on every path
    bool renewed_since_lost_ = false;        // this node renewed its lease after that

    std::unique_ptr<Clock::Token> poll_timer_;
    std::unique_ptr<Clock::Token> retry_timer_;
    // Set to false in the destructor: completions arriving later must not touch *this.
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace vmha::module
