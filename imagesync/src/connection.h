// One NBD client connection: option negotiation, then transmission.
//
// Transmission: a reader coroutine reads one request at a time (header, then a WRITE's
// payload once its length is checked), checks it, and starts it, so many requests are in flight
// and replies go out in completion order. WRITE, WRITE_ZEROES and TRIM (the hot path) run as a
// plain callback chain from a slot of their own; every other request runs in a coroutine. Writes take their interval
// lock ticket in the reader, i.e. in arrival order. Replies go through an ordered queue with
// one outstanding socket write. The first reply queued while no write is outstanding posts a
// send (a plain handler, no wake-up through a timer) that takes every reply queued by then
// (up to kMaxRepliesPerSend) into one gathered write, and so does the end of each write for
// the replies queued meanwhile: a burst of completions costs one system call. The reply to
// the last request in flight is sent at once (nothing else could join it).
// Payloads (WRITE data, READ data) live in buffers recycled through a per-connection pool.
//
// Shutdown: stop() shuts down the receive side, so no new request is read; requests already
// read finish and are answered; then the socket closes. Never answers NBD_ESHUTDOWN.
//
// Owned by the io_context's single thread; coroutines hold a shared_ptr to the connection.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include <vmha/error.h>

#include "asio.h"
#include "buffer_pool.h"
#include "buffered_reader.h"
#include "export.h"
#include "nbd_codec.h"

namespace imagesync {

class Connection : public std::enable_shared_from_this<Connection> {
  public:
    using Socket = asio::local::stream_protocol::socket;
    using OnClosed = std::function<void(std::uint64_t id)>;

    // Requests read but not yet answered, per connection; the reader waits beyond this.
    static constexpr std::size_t kMaxInFlight = 64;
    // Payload bytes (WRITE data read, READ data to send) held per connection; the reader
    // waits beyond this, so a client cannot make the daemon buffer 64 x 32 MiB.
    static constexpr std::uint64_t kMaxBytesInFlight = 128ULL * 1024 * 1024;
    static constexpr std::chrono::seconds kHandshakeTimeout{30};
    // Replies gathered into one socket write (two buffers each: within the iovec limit).
    static constexpr std::size_t kMaxRepliesPerSend = 32;
    // A sent reply's head is kept for the next simple reply if no larger than this.
    static constexpr std::size_t kSpareHeadBytes = 64;

    Connection(std::uint64_t id, Socket socket, std::span<Export* const> exports,
               OnClosed on_closed);

    void start();
    // Stop reading requests; finish and answer the ones already read, then close.
    void stop();
    // Close now (shutdown deadline passed).
    void abort();

  private:
    // A one-waiter wake-up built on a timer.
    class Signal {
      public:
        explicit Signal(const asio::any_io_executor& executor);
        void notify();
        asio::awaitable<void> wait();

      private:
        asio::steady_timer timer_;
        bool waiting_ = false;  // notify() costs nothing while nobody waits
    };

    struct Reply {
        nbd::Bytes head;
        Buffer body;
    };

    asio::awaitable<void> run(std::shared_ptr<Connection> self);
    asio::awaitable<bool> negotiate();
    asio::awaitable<void> transmit(std::shared_ptr<Connection> self);

    // The reply writer: a callback chain, at most one gathered write outstanding.
    void schedule_send();
    void send_replies();
    void replies_sent(const boost::system::error_code& ec);
    bool writer_busy() const { return send_posted_ || sending_; }
    // Every request but a checked write (a refused one too): answered from a coroutine.
    asio::awaitable<void> serve(std::shared_ptr<Connection> self, nbd::Request request,
                                Buffer payload, vmha::Status verdict);
    asio::awaitable<vmha::Status> dispatch(const nbd::Request& request);
    // A WRITE, WRITE_ZEROES or TRIM (with its interval-lock ticket) or a FLUSH (without) that
    // passed its checks; answered by finish_write(), which may run inside this call.
    void start_write(std::shared_ptr<Connection> self, const nbd::Request& request,
                     Buffer payload, std::optional<IntervalLock::Ticket> ticket);
    void finish_write(std::size_t slot, vmha::Status status);
    vmha::Status serve_block_status(const nbd::Request& request);

    void queue(Reply reply);
    void reply_ok(const nbd::Request& request);
    void reply_error(const nbd::Request& request, const vmha::Error& error);

    const std::uint64_t id_;
    Socket socket_;
    std::span<Export* const> exports_;
    OnClosed on_closed_;

    BufferedReader<Socket> reader_{socket_};  // transmission: many requests per read
    BufferPool pool_;                         // payload buffers, recycled

    Export* export_ = nullptr;
    nbd::RequestContext context_;
    bool negotiating_ = true;
    bool stopping_ = false;
    bool closing_ = false;  // no more replies will be queued
    bool broken_ = false;   // the socket failed; replies are dropped
    bool send_posted_ = false;  // send_replies() is posted and has not run yet
    bool sending_ = false;      // a gathered write is outstanding (batch_, buffers_)
    std::size_t in_flight_ = 0;
    std::uint64_t bytes_in_flight_ = 0;
    std::deque<Reply> replies_;
    std::vector<Reply> batch_;                  // the replies of the outstanding write
    std::vector<asio::const_buffer> buffers_;  // their iovecs
    std::vector<nbd::Bytes> spare_heads_;      // sent replies' heads, for reply_ok()
    // Writes in flight: the request, its payload and a reference that keeps the connection
    // alive until the reply is queued. Slots are reused (free_write_slots_).
    struct WriteSlot {
        nbd::Request request;
        Buffer payload;
        std::shared_ptr<Connection> self;
    };
    std::vector<WriteSlot> write_slots_;
    std::vector<std::size_t> free_write_slots_;
    Signal reader_wake_;  // the reader (or shutdown) waits for in-flight requests or the writer
};

}  // namespace imagesync
