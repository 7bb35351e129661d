// One io_uring ring driven by the Asio event loop.
//
// The ring's completion eventfd (io_uring_register_eventfd) is watched by the io_context, so
// file I/O completes on the same single thread as the sockets: no thread per request, no
// locks. Submissions are batched: queued SQEs are submitted once per turn of the loop.
//
// Owned by the io_context's thread; every member is called from it.
#pragma once

#include <array>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>

#include <liburing.h>

#include <vmha/error.h>

#include "asio.h"

namespace imagesync {

class Uring {
  public:
    // Called with cqe->res (bytes or -errno) on the loop thread.
    using Completion = std::function<void(int res)>;

    // Creates the ring and checks that the kernel offers every operation imagesync needs;
    // a kernel without io_uring (or with it disabled) gets a clear error.
    static vmha::Result<std::unique_ptr<Uring>> create(asio::io_context& io, unsigned entries);

    Uring(const Uring&) = delete;
    Uring& operator=(const Uring&) = delete;
    ~Uring();

    // Queues one operation. `sqe` is prepared by the caller with io_uring_prep_*() on a
    // zeroed struct; its user_data is overwritten. `done` runs exactly once.
    void submit(const io_uring_sqe& sqe, Completion done);

    std::size_t in_flight() const { return in_flight_; }
    asio::io_context& context() { return io_; }

    // Stops watching completions; only valid when in_flight() == 0.
    void stop();

  private:
    explicit Uring(asio::io_context& io);
    void arm();
    void on_completions();
    void schedule_flush();
    void flush();

    // A prepared SQE waiting for room in the submission queue (kept as bytes: the struct has
    // a flexible array member that cannot be a member of another struct).
    struct Pending {
        std::array<unsigned char, sizeof(io_uring_sqe)> sqe;
        Completion done;
    };

    asio::io_context& io_;
    io_uring ring_{};
    bool ring_ready_ = false;
    int eventfd_ = -1;
    asio::posix::stream_descriptor watcher_;
    std::deque<Pending> backlog_;  // SQ full: submitted as soon as there is room
    std::size_t in_flight_ = 0;
    bool flush_scheduled_ = false;
    bool stopped_ = false;
};

}  // namespace imagesync
