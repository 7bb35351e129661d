// Where a write goes besides the local image: the seam for replication.
//
// An export's write path applies every modifying operation to the local image file and to
// each ReplicaSink in parallel, and the NBD reply goes out only when all of them completed
// ("write completes when local + all sinks done"). The replication step adds a sink that
// sends the operation to the peer; a sink that loses its peer records the range in the dirty
// map and then completes successfully, so a write is never acknowledged unless it is on both
// sides or recorded dirty. Operations reach sinks in the order the interval lock grants them,
// so overlapping writes arrive in arrival order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string_view>

#include <vmha/error.h>

namespace imagesync {

struct WriteOp {
    enum class Kind { write, write_zeroes, trim, flush };
    Kind kind = Kind::write;
    std::uint64_t offset = 0;
    std::uint64_t length = 0;
    std::span<const std::byte> data;  // Kind::write only; valid until the sink completes
    bool fua = false;                 // durable before completion
    bool may_trim = false;            // write_zeroes without NO_HOLE: may deallocate
    bool fast_only = false;           // write_zeroes with FAST_ZERO: fail rather than write
    // Set by the NBD connection: `data` starts a BufferPool buffer (page-aligned, pages of its
    // own), so a sink may lend its pages to the kernel (a zero-copy send to the peer).
    bool data_in_own_pages = false;
    // Set by Export when `data_in_own_pages`: a sink that lent the pages sets *pages_lent when it
    // completes the operation while the kernel may still read them for the peer (the link went
    // down before the peer acknowledged it). Export then unshares them (unshare_pages) once the
    // image and every sink are done, before the caller may reuse the buffer: a frame the peer
    // reads late carries the bytes it was sent with, never those of a later write.
    bool* pages_lent = nullptr;
};

// Runs on the export's event loop thread.
class ReplicaSink {
  public:
    using Done = std::function<void(vmha::Status)>;
    virtual ~ReplicaSink() = default;
    virtual std::string_view name() const = 0;
    // Applies `op` and calls `done` exactly once, on the event loop thread.
    virtual void apply(const WriteOp& op, Done done) = 0;
    // The local image failed `op` although this sink applied it: the copies now differ in
    // that range (the client was told the operation failed). Called before the client's reply.
    virtual void local_failed(const WriteOp& op) { (void)op; }
};

// What must happen before a modifying operation touches either copy, and after it completed on
// both: the primary's activity log (record the extent durably before the first write to it).
// Runs on the export's event loop thread.
class WriteGate {
public:
    using Done = std::function<void(vmha::Status)>;
    virtual ~WriteGate() = default;
    // `done` once the operation may start (or with the error that forbids it).
    virtual void begin(const WriteOp& op, Done done) = 0;
    // The operation begun with begin() completed on every copy (or was recorded dirty).
    virtual void end(const WriteOp& op) = 0;
};

}  // namespace imagesync
