// The image file behind an export, with all data I/O through io_uring.
//
// Reads past the end of the file return zeroes and writes past it extend the file (that is
// how a growable export lets a qcow2 file grow). Short reads and writes are resubmitted for
// the remainder. FUA writes use RWF_DSYNC; FLUSH is fdatasync (below) or IORING_OP_FSYNC with
// DATASYNC.
//
// Writes copied straight into the page cache (InlineWriteLimits): io_uring hands a buffered
// write to an io-wq worker thread whenever the file system cannot write to the page cache
// without blocking (ext4, up to at least Linux 6.18: RWF_NOWAIT gets EOPNOTSUPP). That hand-off
// (a worker wake-up, two context switches, a completion wake-up of the loop) costs several times
// a 4 KiB copy, and on a secondary it moves a just-received payload, still in this core's cache,
// to another thread. So a write that is not FUA and is page-aligned at both ends (no read of a
// partial page can be needed) is copied on the loop thread when it is at most `max_bytes` (a
// client's write) or `peer_max_bytes` (a write the secondary applies for its primary): with
// pwritev2(RWF_NOWAIT) where the file system supports it (EAGAIN sends the write to io_uring),
// else with pwrite. Measured on ext4 (docs/imagesync.md, "Performance"): 4k random writes
// alone went from 0.65x to 1.26x nbdkit's rate; 1M replicated writes from about 820 to 1240
// MiB/s. A client's large write stays on io_uring: on the primary a worker copying in parallel
// with the loop (which also sends the payload to the peer) wins.
//
// A plain pwrite can still block (dirty-page throttling, memory reclaim, a journal commit): one
// slower than `stall` plus 1 µs per KiB turns inline writes off for `backoff`, so a throttled
// disk stalls io-wq workers, not the loop. An inline write completes through the io_context
// (never inside write()) unless the caller allows Completion::may_run_inside.
//
// A write through io_uring of more than 128 KiB is submitted as 128 KiB pieces at once: with a
// secondary applying its writes inline, that took replicated 1 MiB writes from about 970 to
// 1 350 MiB/s here (a prototype found the same; why 1 MiB buffered writes by one io-wq worker
// are slower than eight pieces is not established).
//
// A flush with at most `flush_max_dirty` bytes written (zeroed, trimmed) since the previous one
// runs fdatasync on the loop: it has little to write back, and io_uring's FSYNC always goes
// through an io-wq worker, a hand-off that measured 25-100 µs per flush here (a direct
// fdatasync after a 4 KiB write took about 100 µs). A slower one than `stall` sends flushes to
// io_uring for `backoff`; a flush after more writes (the write-back could take long) always
// goes through io_uring. Completions go through the io_context, as for inline writes.
//
// Early write-back: while a client flushes after little data (each of its last two flushes
// followed at most `early_writeback_max` bytes), every inline write that stays within that
// budget starts its own write-back once it has been answered (sync_file_range with
// SYNC_FILE_RANGE_WRITE, on the loop: about 6-10 µs here). The disk write then overlaps the
// client's turn-around (reply received, FLUSH sent), and the flush's fdatasync finds it under way
// or done: a C loop of pwrite 4 KiB + 20 µs + fdatasync went from 7 700 to 9 700 iterations/s,
// fdatasync 105 -> 69 µs; imagesyncd alone, fio 4k write + flush at iodepth 1, about +14 %. It
// changes no reply and no durability: the flush still runs fdatasync. Writes past the budget
// (a client writing much between flushes) are left to the flush, so rewriting one page many
// times before a flush does not write it many times. One slower than `stall` pauses them for
// `backoff`.
//
// Direct writes: while the export replicates (enable_direct_writes(), called when a replica sink
// is attached), a client's write of at least `direct_min_bytes` whose offset, length and buffer
// are page-aligned goes to the image through a second descriptor opened with O_DIRECT, as one
// io_uring request. A buffered large write costs the primary an io-wq worker's copy into the page
// cache, the dearest copy of the five a replicated byte takes (docs/imagesync.md); with O_DIRECT
// the device reads the buffer itself (a worker only issues the write when the file system must
// first allocate or convert the range's extents), and its time on the device overlaps the peer's
// round trip, which a replicated write waits for anyway. Durability is the file's as before: a
// FLUSH's fdatasync (on the other descriptor, same inode) flushes the device's cache. Alone, the
// page cache answers sooner than the device, so an export without a sink stays buffered. The
// kernel keeps the two descriptors coherent (a direct write first writes back, then drops, the
// cached pages of its range); overlapping writes never run together (the interval lock). A
// direct write refused with EINVAL (an alignment the device does not accept) is written again
// buffered, and direct writes stop for this file; a file system without O_DIRECT leaves them
// off. FUA is RWF_DSYNC as for any write, so what a reply means is unchanged. Measured
// (docs/imagesync.md, "Direct writes on the primary"): at a fixed 800 MiB/s of 1M writes the
// primary used about 16 % less CPU; the bench's replicated 1M went from about 0.5x to about
// 0.64x nbdkit's rate in the same conditions (medians of eight paired runs).
//
// Owned by the event loop thread. Buffers passed in must stay valid until `done` runs.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include <imagesync/server.h>
#include <vmha/error.h>

#include "uring.h"

namespace imagesync {

class ImageFile {
  public:
    using Done = std::function<void(vmha::Status)>;

    struct WriteCounts {
        std::uint64_t inline_writes = 0;  // copied on the loop thread
        std::uint64_t ring_writes = 0;    // submitted to io_uring (direct ones included)
        std::uint64_t direct_writes = 0;  // of those, written with O_DIRECT
        std::uint64_t stalls = 0;         // inline writes or flushes slower than the stall limit
        std::uint64_t inline_flushes = 0;  // fdatasync on the loop thread
        std::uint64_t ring_flushes = 0;    // fsync submitted to io_uring
        std::uint64_t early_writebacks = 0;  // write-backs started before the flush (below)
        std::uint64_t direct_reads = 0;  // reads that bypassed the page cache (Cache::bypass)
    };

    static vmha::Result<std::unique_ptr<ImageFile>> open(Uring& uring,
                                                         const std::filesystem::path& path,
                                                         bool writable,
                                                         InlineWriteLimits inline_writes = {});
    ImageFile(const ImageFile&) = delete;
    ImageFile& operator=(const ImageFile&) = delete;
    ~ImageFile();

    const std::filesystem::path& path() const { return path_; }
    const WriteCounts& write_counts() const { return counts_; }
    // The file's current size on disk (it grows with writes past its end).
    vmha::Result<std::uint64_t> current_size() const;

    // Whether a read's pages stay in the page cache: `keep` (a client's read), or `bypass` for
    // a resync or verify that scans the image: read with O_DIRECT where the offset, length and
    // buffer are page-aligned and the file system allows it, else as any read. A scan read
    // through the page cache would leave the image's cache filled with what it read, in large
    // folios, into which every later small buffered write is several times slower on ext4
    // (docs/imagesync.md, "Scans bypass the page cache"); O_DIRECT writes any dirty cached
    // pages of the range back first, so it reads what a cached read would.
    enum class Cache { keep, bypass };
    void read(std::uint64_t offset, std::span<std::byte> buffer, Done done,
              Cache cache = Cache::keep);
    // Who asked for a write: a client of this node, or the primary (applied on the secondary).
    enum class Origin { client, peer };
    // How an inline write or flush (done on the loop, inside the call) reports: through the
    // io_context (the default: `done` never runs inside the call), or at once, inside the call,
    // for a caller that allows it (a lone primary's export: the reply then goes out before the
    // loop turns). I/O through io_uring always completes later.
    enum class Completion { posted, may_run_inside };
    void write(std::uint64_t offset, std::span<const std::byte> data, bool fua, Done done,
               Origin origin = Origin::client, Completion completion = Completion::posted);
    // Large aligned client writes go with O_DIRECT from now on ("Direct writes" above), unless
    // `direct_min_bytes` is 0 or the file system refuses O_DIRECT (then logged, and off).
    void enable_direct_writes();
    bool direct_writes() const { return direct_fd_ >= 0 && !direct_refused_; }
    // After a failed fdatasync the kernel may have dropped dirty pages and cleared the
    // error, so a later fdatasync could succeed without the data: once one fails, every later
    // flush (and FUA write) of this file fails too, until imagesyncd restarts.
    // `may_inline`: fdatasync may run on the loop (--inline-flush), when little was written.
    void flush(Done done, bool may_inline = true, Completion completion = Completion::posted);
    // Deallocates (PUNCH_HOLE|KEEP_SIZE); a file system without hole punching makes it a no-op.
    void trim(std::uint64_t offset, std::uint64_t length, bool fua, Done done);
    // Zeroes a range: by punching a hole when `may_trim`, else FALLOC_FL_ZERO_RANGE, else by
    // writing zeroes -- unless `fast_only`, which fails with errc::unsupported instead.
    void write_zeroes(std::uint64_t offset, std::uint64_t length, bool may_trim, bool fast_only,
                      bool fua, Done done);
    // Read-ahead hint (POSIX_FADV_WILLNEED).
    void cache(std::uint64_t offset, std::uint32_t length, Done done);

    // Allocation map of [offset, offset + length) by SEEK_DATA/SEEK_HOLE, at most
    // `max_extents` extents (the last one may stop short of the end). Synchronous: lseek does
    // not block on data I/O. Past the end of the file everything is a hole.
    struct Extent {
        std::uint64_t length = 0;
        bool hole = false;
    };
    vmha::Result<std::vector<Extent>> allocation(std::uint64_t offset, std::uint64_t length,
                                                 std::size_t max_extents) const;

  private:
    struct Transfer;
    struct ZeroFill;
    ImageFile(Uring& uring, std::filesystem::path path, int fd, InlineWriteLimits inline_writes);
    bool direct_eligible(std::uint64_t offset, std::span<const std::byte> data, Origin origin) const;
    static bool direct_aligned(std::uint64_t offset, std::size_t size, const std::byte* data);
    bool open_direct_reads();  // whether reads may bypass the cache (opens direct_read_fd_)
    bool inline_eligible(std::uint64_t offset, std::size_t size, bool fua, Origin origin);
    // `early_writeback`: start its write-back once answered ("Early write-back" above).
    void write_inline(std::shared_ptr<Transfer> t, Completion completion, bool early_writeback);
    void write_through_ring(std::shared_ptr<Transfer> t);  // in kRingWritePiece pieces
    void start_writeback(std::uint64_t offset, std::size_t length);
    void flush_inline(Done done, Completion completion);
    void flush_through_ring(Done done);
    void flushed(int res, Done done);  // the fdatasync's result: done, or durability lost
    void issue(std::shared_ptr<Transfer> t);
    void on_transfer(std::shared_ptr<Transfer> t, int res);
    void issue_zero_fill(std::shared_ptr<ZeroFill> z);
    void fallocate(int mode, std::uint64_t offset, std::uint64_t length,
                   std::function<void(int)> done);
    void then_sync(bool fua, vmha::Status status, Done done);
    vmha::Error failure(const char* what, std::uint64_t offset, std::uint64_t length,
                        int error) const;

    Uring& uring_;
    std::filesystem::path path_;
    int fd_ = -1;
    int direct_fd_ = -1;  // the same file with O_DIRECT, once direct writes are on
    int direct_read_fd_ = -1;  // ... read-only, for reads that bypass the cache, on first use
    bool direct_reads_refused_ = false;  // O_DIRECT refused at open or by EINVAL: no more
    bool direct_refused_ = false;  // a direct write got EINVAL: no more of them
    std::optional<vmha::Error> durability_lost_;

    enum class Nowait { unknown, supported, unsupported };
    InlineWriteLimits inline_;
    Nowait nowait_ = Nowait::unknown;
    // After a stall (an inline write or fdatasync slower than its limit), that kind of I/O goes
    // through io_uring until `until`.
    struct Pause {
        const char* what;  // "writes", "flushes": for the log
        bool on = false;
        std::chrono::steady_clock::time_point until{};
        // Whether inline I/O may run now; a pause that has run out ends here.
        bool allows(const std::filesystem::path& image);
        // After one that ran from `start` to `end`: a stall if longer than `limit` (the pause
        // begins, for `backoff`).
        bool stalled(std::chrono::steady_clock::time_point start,
                     std::chrono::steady_clock::time_point end,
                     std::chrono::steady_clock::duration limit, std::chrono::milliseconds backoff);
    };
    Pause write_pause_{"writes"};
    std::size_t inline_pending_ = 0;  // inline writes and flushes whose completion is posted
    std::uint64_t written_since_flush_ = 0;  // bytes written, zeroed or trimmed since the last flush
    Pause flush_pause_{"flushes"};
    int small_flushes_ = 0;  // consecutive flushes after at most early_writeback_max bytes (max 2)
    Pause writeback_pause_{"early write-backs"};
    std::shared_ptr<const int> alive_ = std::make_shared<const int>(0);  // for posted write-backs
    WriteCounts counts_;
};

}  // namespace imagesync
