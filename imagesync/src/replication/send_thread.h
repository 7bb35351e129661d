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
// Zero-copy send: a piece marked `lend` (a client's large write payload, ReplicatorConfig::
// zero_copy_min_bytes) is not copied into the socket. vmsplice() maps its pages into a pipe of
// the thread's own, and splice() hands them to the socket, which keeps references to them: on
// loopback the peer's receive copies straight out of them, and a NIC reads them itself. The
// kernel gives no notice when it dropped its references (MSG_ZEROCOPY would, but on loopback
// it copies, which is where the bench runs), so the contract is this: the bytes must not change
// until the peer acknowledged the frame (the peer has then read them all), and a payload whose
// frame the peer never acknowledged gets fresh pages before its buffer is reused
// (unshare_pages in buffer_pool.h, done by Export, replica_sink.h): a frame that still reaches
// the peer after the link was given up carries the bytes it was sent with. Measured here
// (docs/imagesync.md, "Zero-copy send"): replicated 1M writes QD8 about +8 %, the primary's CPU
// per MiB about 17 % lower. A kernel that refuses vmsplice or splice on this socket (EINVAL,
// ENOSYS, EPERM, EOPNOTSUPP before a byte moved) turns it off for the thread: those pieces are
// copied as before (logged once at warn).
//
// Owned by the event loop thread; send() must not be called again before it returned.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <sys/uio.h>

#include "asio.h"

namespace imagesync {

class SendThread {
  public:
    // `fd`: a connected stream socket (duplicated here; the caller keeps its own).
    SendThread(int fd, asio::any_io_executor executor);
    SendThread(const SendThread&) = delete;
    SendThread& operator=(const SendThread&) = delete;
    ~SendThread();

    struct Piece {
        asio::const_buffer bytes;
        bool lend = false;  // may go by zero-copy send (see above)
    };

    // Writes all of `pieces` (whose bytes must stay valid until this returns, and those lent
    // unchanged until the peer acknowledged them) to the socket.
    asio::awaitable<boost::system::error_code> send(const std::vector<Piece>& pieces);

    // Bytes handed to the socket by zero-copy send so far, those of a failed batch included
    // (read on the loop thread between batches).
    std::uint64_t bytes_lent() const { return bytes_lent_.load(std::memory_order_relaxed); }

  private:
    void run();
    int write_all(const std::vector<Piece>& pieces);  // 0 or an errno
    int copy_out(std::vector<iovec>& iov, bool more);  // sendmsg all of `iov`
    int lend_out(const std::byte* data, std::size_t size, bool more);  // vmsplice + splice
    bool open_pipe();
    int refused(int error, bool stream_broken);  // kRefused, or `error` to end the batch

    int fd_ = -1;
    asio::any_io_executor executor_;
    // Cancelled (on the loop) when a batch finished; shared with that posted handler.
    std::shared_ptr<asio::steady_timer> done_;
    std::mutex mutex_;
    std::condition_variable wake_;
    const std::vector<Piece>* job_ = nullptr;  // guarded by mutex_
    bool finished_ = false;                                  // guarded by mutex_
    int result_ = 0;                                         // guarded by mutex_
    std::atomic<bool> stopping_{false};
    // The thread's own: the pipe that zero-copy send passes pages through (-1: not open yet),
    // and whether the kernel refused zero-copy send.
    int pipe_read_ = -1;
    int pipe_write_ = -1;
    bool lend_refused_ = false;
    std::atomic<std::uint64_t> bytes_lent_{0};
    std::thread thread_;
};

}  // namespace imagesync
