// The activity log: the extents of an export that writes may be touching, kept on disk.
//
// Modelled on DRBD's activity log. The primary writes locally and to the peer at the same
// time, so after a crash of the primary its copy may differ from the peer's wherever a write
// was in flight. Before a write touches an extent (default 4 MiB) that is not "hot", the
// extent is recorded durably; it then stays hot, so later writes to it cost no metadata I/O.
// At most `max_hot_extents` (default 1024, i.e. 4 GiB) are hot; a new extent evicts the least
// recently used hot extent that has no write in flight. The eviction costs nothing extra: the
// new extent takes the victim's slot, and that one slot update is the log record of both.
// After an unclean shutdown, logged_extents() (or recover()) are the only ranges in which the
// two copies can differ, and they join the resync.
//
// On disk: page 0 is a header (magic "vmhaactl", version, reserved flags, extent size, hot
// extent capacity, ring size, export size, a random log id, XXH3-64 checksum). Pages 1..R are
// a ring of 4 KiB transactions, transaction `seq` at page 1 + (seq-1) % R. A transaction holds
// up to 64 slot updates (slot → extent) and a rotating window of up to 886 slots' current
// values (the "context", as in DRBD), a log id, its sequence number and a checksum. R is large
// enough that the newest R-1 transactions hold a context for every slot, so losing the newest
// page to a torn write (its writers were never released) still leaves a complete picture.
// Recovery replays the newest consecutive run of valid transactions. A new log id (create(),
// reset()) invalidates every older transaction with a single header write.
//
// Writes to the log are strictly one at a time; updates that arrive meanwhile are batched into
// the next transaction (up to 64 per transaction). Failure is sticky: after a failed log write
// every waiting and later begin_write() fails with that error.
//
// Threading: owned by one event loop; not thread-safe. The log must outlive the MetaFile's
// pending writes (their callbacks refer to it).
#pragma once

#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include <vmha/error.h>

#include "meta/meta_file.h"

namespace imagesync::meta {

struct ActivityLogConfig {
    std::uint64_t export_size = 0;
    std::uint32_t extent_size = 4u * 1024 * 1024;  // a power of two, 64 KiB .. 1 GiB
    std::uint32_t max_hot_extents = 1024;          // 16 .. 65534
    bool operator==(const ActivityLogConfig&) const = default;
};

class ActivityLog {
public:
    // A new, empty log (a new log id). Its header is written at once; flush() reports when durable.
    static vmha::Result<std::unique_ptr<ActivityLog>> create(MetaFile& file,
                                                             const ActivityLogConfig& config);
    // The log in `file`, recovered, which must have been made with `config`. The recovered
    // extents start hot and are reported by logged_extents() until evicted.
    static vmha::Result<std::unique_ptr<ActivityLog>> open(MetaFile& file,
                                                           const ActivityLogConfig& config);

    struct Recovered {
        ActivityLogConfig config;       // as recorded in the file
        std::vector<ByteRange> extents;  // sorted, coalesced
    };
    // Read-only recovery with the file's own geometry (e.g. after the configuration changed).
    static vmha::Result<Recovered> recover(MetaFile& file);

    ActivityLog(const ActivityLog&) = delete;
    ActivityLog& operator=(const ActivityLog&) = delete;

    // A write of [offset, offset+length) is about to start. `done` runs once every touched
    // extent is durably logged: at once (returning false) when they all are hot and logged, or
    // the log has failed; later (returning true) otherwise, including when every hot extent is
    // busy and the write waits for end_write() to free one. A range beyond the export is a bug.
    bool begin_write(std::uint64_t offset, std::uint64_t length, DoneCallback done);
    // The write begun with the same range completed on both sides (or was recorded dirty).
    void end_write(std::uint64_t offset, std::uint64_t length);
    // `done` once everything queued so far is durable.
    bool flush(DoneCallback done);
    // Empties the log durably (a new log id): for a clean shutdown or demotion, or once the
    // recovered extents have been merged into the resync. No write may be in flight.
    bool reset(DoneCallback done);

    // The extents a crash now would report: those in the durable log. Sorted, coalesced bytes.
    std::vector<ByteRange> logged_extents() const;
    bool is_hot(std::uint64_t offset) const;
    std::size_t hot_extents() const { return hot_.size(); }
    std::size_t writes_waiting_for_a_slot() const { return blocked_.size(); }
    std::uint64_t transactions_written() const { return transactions_written_; }
    const ActivityLogConfig& config() const { return config_; }
    const vmha::Error* failure() const { return failure_ ? &*failure_ : nullptr; }

private:
    struct Hot {
        std::uint32_t slot = 0;
        std::uint32_t in_flight = 0;  // begun and not ended writes (waiting ones included)
        std::uint64_t log_seq = 0;    // the transaction that logs it (durable when <= durable_seq_)
        std::list<std::uint32_t>::iterator lru;  // valid while in_flight == 0
    };
    struct Blocked {
        std::uint64_t offset;
        std::uint64_t length;
        DoneCallback done;
    };
    enum class Admit { now, later, no_slot };
    struct State;

    ActivityLog(MetaFile& file, const ActivityLogConfig& config, std::uint32_t ring_pages);
    static vmha::Status check_config(const MetaFile& file, const ActivityLogConfig& config);
    static vmha::Result<State> read_state(MetaFile& file);

    Admit admit(std::uint32_t first, std::uint32_t last, DoneCallback& done);
    void admit_blocked();
    void pump();
    void on_write_done(vmha::Status status);
    void fail_everything();
    void check_range(std::uint64_t offset, std::uint64_t length, const char* what) const;
    Page header_page() const;
    std::list<std::uint32_t>::iterator lru_push_back(std::uint32_t extent);
    void lru_remove(std::list<std::uint32_t>::iterator it);

    MetaFile& file_;
    ActivityLogConfig config_;
    std::uint32_t ring_pages_;
    std::uint64_t log_id_ = 0;

    std::vector<std::uint32_t> slots_;          // slot → extent, in memory
    std::vector<std::uint32_t> durable_slots_;  // slot → extent, as on disk
    std::vector<std::uint32_t> free_slots_;
    std::unordered_map<std::uint32_t, Hot> hot_;
    std::list<std::uint32_t> lru_;  // hot extents with no write in flight, least recent first
    std::list<std::uint32_t> lru_spare_;  // nodes taken off lru_, reused (no allocation per write)
    std::deque<std::pair<std::uint32_t, std::uint32_t>> pending_updates_;  // (slot, extent)
    std::deque<Blocked> blocked_;
    std::multimap<std::uint64_t, DoneCallback> waiters_;  // by the transaction they need
    std::vector<DoneCallback> flush_waiters_;

    std::uint64_t next_seq_ = 1;
    std::uint64_t durable_seq_ = 0;
    std::uint32_t context_start_ = 0;
    bool header_pending_ = false;
    bool in_flight_ = false;
    bool in_flight_is_header_ = false;
    std::vector<std::pair<std::uint32_t, std::uint32_t>> in_flight_values_;
    std::uint64_t in_flight_seq_ = 0;
    std::uint64_t transactions_written_ = 0;
    std::optional<vmha::Error> failure_;
};

}  // namespace imagesync::meta
