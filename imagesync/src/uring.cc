#include "uring.h"

#include <cerrno>
#include <cstdint>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

namespace imagesync {

namespace {

// Heap record whose address travels as the SQE's user_data.
struct Op {
    Uring::Completion done;
};

}  // namespace

Uring::Uring(asio::io_context& io) : io_(io), watcher_(io) {}

vmha::Result<std::unique_ptr<Uring>> Uring::create(asio::io_context& io, unsigned entries) {
    std::unique_ptr<Uring> u(new Uring(io));
    io_uring_params params{};
    params.flags = IORING_SETUP_CQSIZE;
    params.cq_entries = entries * 8;
    const int rc = io_uring_queue_init_params(entries, &u->ring_, &params);
    if (rc < 0) {
        return vmha::Error(
            vmha::errc::unsupported,
            fmt::format("io_uring is not available: io_uring_setup with {} entries failed: {}; "
                        "check the kernel (5.6 or later), sysctl kernel.io_uring_disabled and "
                        "the container's seccomp profile",
                        entries, std::strerror(-rc)));
    }
    u->ring_ready_ = true;

    io_uring_probe* probe = io_uring_get_probe_ring(&u->ring_);
    if (probe == nullptr) {
        return vmha::Error(vmha::errc::unsupported,
                           "io_uring is available but cannot be probed for its operations "
                           "(kernel older than 5.6?)");
    }
    struct Needed {
        int op;
        const char* name;
    };
    constexpr Needed needed[] = {{IORING_OP_READ, "READ"},
                                 {IORING_OP_WRITE, "WRITE"},
                                 {IORING_OP_FSYNC, "FSYNC"},
                                 {IORING_OP_FALLOCATE, "FALLOCATE"},
                                 {IORING_OP_FADVISE, "FADVISE"}};
    for (const Needed& n : needed) {
        if (io_uring_opcode_supported(probe, n.op) == 0) {
            io_uring_free_probe(probe);
            return vmha::Error(vmha::errc::unsupported,
                               fmt::format("io_uring on this kernel lacks IORING_OP_{}, which "
                                           "imagesync needs",
                                           n.name));
        }
    }
    io_uring_free_probe(probe);

    u->eventfd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (u->eventfd_ < 0) {
        return vmha::Error(
            vmha::errc_from_errno(errno),
            fmt::format("eventfd for io_uring completions failed: {}", std::strerror(errno)));
    }
    u->watcher_.assign(u->eventfd_);  // the watcher owns and closes the eventfd
    const int reg = io_uring_register_eventfd(&u->ring_, u->eventfd_);
    if (reg < 0) {
        return vmha::Error(
            vmha::errc::unsupported,
            fmt::format("io_uring_register_eventfd failed: {}", std::strerror(-reg)));
    }
    u->arm();
    spdlog::debug("io_uring ready: {} SQ entries, {} CQ entries, features {:#x}", entries,
                  params.cq_entries, params.features);
    return u;
}

Uring::~Uring() {
    if (in_flight_ != 0) {
        vmha::internal_error(
            fmt::format("io_uring destroyed with {} operations in flight", in_flight_));
    }
    boost::system::error_code ignored;
    watcher_.close(ignored);
    if (ring_ready_) io_uring_queue_exit(&ring_);
}

void Uring::stop() {
    if (in_flight_ != 0) {
        vmha::internal_error(
            fmt::format("io_uring stopped with {} operations in flight", in_flight_));
    }
    stopped_ = true;
    boost::system::error_code ignored;
    watcher_.cancel(ignored);
}

void Uring::submit(const io_uring_sqe& sqe, Completion done) {
    ++in_flight_;
    io_uring_sqe* slot = backlog_.empty() ? io_uring_get_sqe(&ring_) : nullptr;
    if (slot == nullptr) {
        Pending pending{{}, std::move(done)};
        std::memcpy(pending.sqe.data(), &sqe, sizeof sqe);
        backlog_.push_back(std::move(pending));
        schedule_flush();
        return;
    }
    *slot = sqe;
    io_uring_sqe_set_data(slot, new Op{std::move(done)});
    schedule_flush();
}

void Uring::schedule_flush() {
    if (flush_scheduled_) return;
    flush_scheduled_ = true;
    asio::post(io_, [this] { flush(); });
}

void Uring::flush() {
    flush_scheduled_ = false;
    for (;;) {
        // Move backlog entries into the SQ while there is room.
        while (!backlog_.empty()) {
            io_uring_sqe* slot = io_uring_get_sqe(&ring_);
            if (slot == nullptr) break;
            std::memcpy(slot, backlog_.front().sqe.data(), sizeof *slot);
            io_uring_sqe_set_data(slot, new Op{std::move(backlog_.front().done)});
            backlog_.pop_front();
        }
        if (io_uring_sq_ready(&ring_) == 0) return;
        const int rc = io_uring_submit(&ring_);
        if (rc == -EINTR) continue;
        if (rc == -EBUSY || rc == -EAGAIN) {
            // The completion queue is full: retried after the next completions are reaped.
            spdlog::debug("io_uring submit deferred: {}", std::strerror(-rc));
            return;
        }
        if (rc < 0) {
            vmha::internal_error(fmt::format("io_uring_submit failed: {}", std::strerror(-rc)));
        }
        if (backlog_.empty()) return;
    }
}

void Uring::arm() {
    watcher_.async_wait(asio::posix::stream_descriptor::wait_read,
                        [this](const boost::system::error_code& ec) {
                            if (ec || stopped_) return;
                            on_completions();
                            if (!stopped_) arm();
                        });
}

void Uring::on_completions() {
    std::uint64_t count = 0;
    // Nonblocking: EAGAIN just means another turn already consumed the counter.
    [[maybe_unused]] const ssize_t n = ::read(eventfd_, &count, sizeof count);
    io_uring_cqe* cqe = nullptr;
    while (io_uring_peek_cqe(&ring_, &cqe) == 0 && cqe != nullptr) {
        std::unique_ptr<Op> op(static_cast<Op*>(io_uring_cqe_get_data(cqe)));
        const int res = cqe->res;
        io_uring_cqe_seen(&ring_, cqe);
        --in_flight_;
        op->done(res);  // may submit more work; the CQE is already consumed
    }
    if (!backlog_.empty() || io_uring_sq_ready(&ring_) != 0) schedule_flush();
}

}  // namespace imagesync
