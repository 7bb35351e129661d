// An export: one image file served under a name, with its size rule, its interval lock and
// its write path (local image + replica sinks). Shared by every connection that opened it.
//
// Owned by the event loop thread.
#pragma once

#include <deque>
#include <memory>
#include <optional>
#include <vector>

#include <imagesync/server.h>
#include <vmha/error.h>

#include "image_file.h"
#include "interval_lock.h"
#include "negotiation.h"
#include "replica_sink.h"

namespace imagesync {

class Export {
  public:
    static vmha::Result<std::unique_ptr<Export>> open(Uring& uring, asio::any_io_executor executor,
                                                      const ExportSpec& spec, Role role,
                                                      bool growable,
                                                      InlineWriteLimits inline_writes = {});

    const nbd::ExportInfo& info() const { return info_; }

    // Read-only follows the node's role and changes at runtime (promote/demote): a read-only
    // export answers writes with EPERM (a flush still flushes the local image). Clients that
    // negotiated while it was read-only were told so; the check here covers the others.
    bool read_only() const { return info_.read_only; }
    void set_read_only(bool read_only) { info_.read_only = read_only; }
    ImageFile& file() { return *file_; }
    IntervalLock& locks() { return locks_; }

    // A replicating export writes its large client writes with O_DIRECT (image_file.h).
    void add_sink(std::shared_ptr<ReplicaSink> sink) {
        sinks_.push_back(std::move(sink));
        file_->enable_direct_writes();
    }
    // The gate every write, TRIM and WRITE_ZEROES passes before it starts (nullptr: none).
    void set_gate(WriteGate* gate) { gate_ = gate; }

    // Applies a modifying operation to the local image and to every sink in parallel; `done`
    // runs once all completed, with the local failure if any, else the first sink failure.
    // With no sink and no gate (a primary without a peer) `done` may run inside this call: an
    // inline write or flush then reports at once (ImageFile::Completion::may_run_inside).
    // Started, an operation cannot be withdrawn (the image or a sink may hold `done`, and would
    // answer it after a caller answered an exception): an exception from inside (an allocation
    // failure) ends the daemon. One from building the arguments, before the call, reaches the
    // caller, and nothing has started.
    void apply(const WriteOp& op, ReplicaSink::Done done) noexcept;

    // The same, but only once `ticket` (taken from locks() in arrival order) is granted, so
    // overlapping writes reach the image and every sink one at a time, in arrival order; the
    // ticket is released when the operation completed. `op.data` must stay valid until then.
    // A ticket granted already starts the operation inside this call, so `done` may run inside
    // it as apply() says; a ticket still waiting starts from a posted handler once granted.
    void apply_in_order(IntervalLock::Ticket ticket, const WriteOp& op, ReplicaSink::Done done);

  private:
    // One operation on its way through the lock, the gate, the image and the sinks. Each
    // stage's callback holds only (this, flight), which std::function stores without an
    // allocation; flights are reused, so a write allocates nothing here once the pool is warm.
    struct Flight {
        WriteOp op;
        ReplicaSink::Done done;  // the caller's
        std::optional<IntervalLock::Ticket> ticket;
        WriteGate* gate = nullptr;  // the one the operation began with, even if it changes
        std::size_t remaining = 0;  // the image and the sinks still to complete
        std::optional<vmha::Error> local_error;
        std::optional<vmha::Error> sink_error;
        bool pages_lent = false;  // op.pages_lent points here (replica_sink.h)
    };

    Export(nbd::ExportInfo info, std::unique_ptr<ImageFile> file, asio::any_io_executor executor);
    Flight* take_flight(const WriteOp& op, ReplicaSink::Done done);
    void start(Flight* f) noexcept;
    void apply_everywhere(Flight* f);
    void joined(Flight* f);
    void finish(Flight* f, vmha::Status status);
    void apply_local(const WriteOp& op, ImageFile::Done done);

    nbd::ExportInfo info_;
    std::unique_ptr<ImageFile> file_;
    IntervalLock locks_;
    std::vector<std::shared_ptr<ReplicaSink>> sinks_;
    WriteGate* gate_ = nullptr;
    std::deque<Flight> flights_;          // every flight ever made (stable addresses)
    std::vector<Flight*> spare_flights_;  // those not in use
};

// The virtual size of a qcow2 image from its header, or nullopt when `header` (the first 32
// bytes of the file or more) is not qcow2.
std::optional<std::uint64_t> qcow2_virtual_size(std::span<const std::byte> header);

}  // namespace imagesync
