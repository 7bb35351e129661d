// Sends large batches of replication frames from a thread of their own.
//
// On the primary the event loop thread receives each write's payload from the NBD client and
// sends it to the peer: two copies of every byte on one thread, plus the loopback or NIC
// transmit path that runs in the sender's context. With the send on this thread, the loop
// receives the next payload while the previous one is copied into the socket. Measured here
// (docs/imagesync.md, "Performance"): replicated 1M sequential writes QD8 about +15%; 4k
// random writes did not gain (each hand-off costs two wake-ups), so a batch without a large
// payload stays on the loop (Session::write_loop decides by its largest payload).
//
// One batch at a time: send() returns when every byte was written or the socket failed. The
// thread writes through its own duplicate of the socket's descriptor, so closing the asio
// socket while a batch is in flight cannot hand a reused descriptor number to the thread; a
// shutdown() of the socket (Session::close) makes the batch fail at once.
//
// Owned by the event loop thread; send() must not be called again before it returned.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "asio.h"

namespace imagesync {

class SendThread {
  public:
    // `fd`: a connected stream socket (duplicated here; the caller keeps its own).
    SendThread(int fd, asio::any_io_executor executor);
    SendThread(const SendThread&) = delete;
    SendThread& operator=(const SendThread&) = delete;
    ~SendThread();

    // Writes all of `buffers` (which must stay valid until this returns) to the socket.
    asio::awaitable<boost::system::error_code> send(const std::vector<asio::const_buffer>& buffers);

  private:
    void run();
    int write_all(const std::vector<asio::const_buffer>& buffers);  // 0 or an errno

    int fd_ = -1;
    asio::any_io_executor executor_;
    // Cancelled (on the loop) when a batch finished; shared with that posted handler.
    std::shared_ptr<asio::steady_timer> done_;
    std::mutex mutex_;
    std::condition_variable wake_;
    const std::vector<asio::const_buffer>* job_ = nullptr;  // guarded by mutex_
    bool finished_ = false;                                  // guarded by mutex_
    int result_ = 0;                                         // guarded by mutex_
    std::atomic<bool> stopping_{false};
    std::thread thread_;
};

}  // namespace imagesync
