// One TLS connection carrying control frames. Owned by the executor that runs it (vmhad's
// loop); shared by the coroutines that read it and the queue that writes it.
//
// Writes go through an ordered queue with one outstanding write. Every read and handshake
// has a deadline: when it passes, the socket is closed and the operation fails.
#pragma once

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "asio.h"
#include "frame.h"

namespace vmha::peer::detail {

class Channel : public std::enable_shared_from_this<Channel> {
public:
    using Stream = asio::ssl::stream<asio::ip::tcp::socket>;

    Channel(asio::ip::tcp::socket socket, asio::ssl::context& tls, std::string remote);

    Stream& stream() { return stream_; }
    SSL* ssl() { return stream_.native_handle(); }
    const std::string& remote() const { return remote_; }  // "127.0.0.2:7800", for messages
    bool closed() const { return closed_; }

    asio::awaitable<Status> connect(asio::ip::tcp::endpoint local, asio::ip::tcp::endpoint remote, Ms deadline);
    asio::awaitable<Status> handshake(asio::ssl::stream_base::handshake_type type, Ms deadline);
    asio::awaitable<Result<Frame>> read_frame(Ms deadline);
    void send(FrameType type, const nlohmann::json& payload);
    // Sends a last frame, then closes once it is written (or after one second).
    void send_and_close(FrameType type, const nlohmann::json& payload);
    void close();
    // Completes when close() has been called.
    asio::awaitable<void> wait_closed();

private:
    void arm(Ms deadline);
    void write_next();

    Stream stream_;
    std::string remote_;
    asio::steady_timer watchdog_;
    asio::steady_timer closed_signal_;
    std::deque<std::vector<std::uint8_t>> queue_;
    bool writing_ = false;
    bool closing_ = false;  // close after the queue drains
    bool closed_ = false;
    bool timed_out_ = false;
};

}  // namespace vmha::peer::detail
