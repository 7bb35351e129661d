#include "channel.h"

#include <fmt/format.h>

namespace vmha::peer::detail {

using boost::system::error_code;

Channel::Channel(asio::ip::tcp::socket socket, asio::ssl::context& tls, std::string remote)
    : stream_(std::move(socket), tls),
      remote_(std::move(remote)),
      watchdog_(stream_.get_executor()),
      closed_signal_(stream_.get_executor(), asio::steady_timer::time_point::max()) {}

void Channel::arm(Ms deadline) {
    timed_out_ = false;
    watchdog_.expires_after(deadline);
    watchdog_.async_wait([weak = weak_from_this()](const error_code& ec) {
        if (ec) return;
        if (auto self = weak.lock()) {
            self->timed_out_ = true;
            self->close();
        }
    });
}

asio::awaitable<Status> Channel::connect(asio::ip::tcp::endpoint local, asio::ip::tcp::endpoint remote,
                                         Ms deadline) {
    auto self = shared_from_this();
    auto& socket = stream_.lowest_layer();
    error_code ec;
    socket.open(remote.protocol(), ec);
    if (!ec) socket.bind(local, ec);
    if (ec) {
        co_return Error(errc_from_errno(ec.value()),
                        fmt::format("cannot bind a socket to {} to reach {}: {}", local.address().to_string(), remote_,
                                    ec.message()));
    }
    arm(deadline);
    co_await socket.async_connect(remote, asio::redirect_error(asio::use_awaitable, ec));
    watchdog_.cancel();
    if (timed_out_) {
        co_return Error(errc::timeout, fmt::format("connecting to {} took longer than {} ms", remote_, deadline.count()));
    }
    if (ec) co_return Error(errc::connection_lost, fmt::format("cannot connect to {}: {}", remote_, ec.message()));
    co_return Status{};
}

asio::awaitable<Status> Channel::handshake(asio::ssl::stream_base::handshake_type type, Ms deadline) {
    auto self = shared_from_this();
    arm(deadline);
    error_code ec;
    co_await stream_.async_handshake(type, asio::redirect_error(asio::use_awaitable, ec));
    watchdog_.cancel();
    if (timed_out_) {
        co_return Error(errc::timeout, fmt::format("TLS handshake with {} took longer than {} ms", remote_,
                                                   deadline.count()));
    }
    if (ec) co_return Error(errc::connection_lost, ec.message());
    co_return Status{};
}

asio::awaitable<Result<Frame>> Channel::read_frame(Ms deadline) {
    auto self = shared_from_this();
    if (closed_) co_return Error(errc::connection_lost, "the connection is closed");
    arm(deadline);
    std::array<std::uint8_t, frame_header_size> header{};
    error_code ec;
    co_await asio::async_read(stream_, asio::buffer(header), asio::redirect_error(asio::use_awaitable, ec));
    auto finish = [&](Error error) -> Result<Frame> {
        watchdog_.cancel();
        if (timed_out_) {
            return Error(errc::timeout, fmt::format("{} sent nothing for {} ms", remote_, deadline.count()));
        }
        return error;
    };
    if (ec) co_return finish(Error(errc::connection_lost, fmt::format("reading from {} failed: {}", remote_, ec.message())));
    auto parsed = decode_frame_header(header);
    if (!parsed) co_return finish(std::move(parsed).error());
    std::vector<std::uint8_t> payload(parsed->length);
    co_await asio::async_read(stream_, asio::buffer(payload), asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return finish(Error(errc::connection_lost, fmt::format("reading from {} failed: {}", remote_, ec.message())));
    watchdog_.cancel();
    auto json = decode_frame_payload(parsed->type, payload);
    if (!json) co_return std::move(json).error();
    co_return Frame{parsed->type, std::move(*json)};
}

void Channel::send(FrameType type, const nlohmann::json& payload) {
    if (closed_ || closing_) return;
    queue_.push_back(encode_frame(type, payload));
    write_next();
}

void Channel::send_and_close(FrameType type, const nlohmann::json& payload) {
    send(type, payload);
    closing_ = true;
    if (!writing_) {
        close();
        return;
    }
    arm(Ms(1000));
}

void Channel::write_next() {
    if (writing_ || closed_ || queue_.empty()) return;
    writing_ = true;
    asio::async_write(stream_, asio::buffer(queue_.front()),
                      [self = shared_from_this()](const error_code& ec, std::size_t) {
                          self->writing_ = false;
                          if (ec) {
                              self->close();
                              return;
                          }
                          self->queue_.pop_front();
                          if (self->queue_.empty() && self->closing_) {
                              self->close();
                              return;
                          }
                          self->write_next();
                      });
}

void Channel::close() {
    if (closed_) return;
    closed_ = true;
    error_code ignored;
    stream_.lowest_layer().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    stream_.lowest_layer().close(ignored);
    watchdog_.cancel();
    closed_signal_.cancel();
}

asio::awaitable<void> Channel::wait_closed() {
    auto self = shared_from_this();
    while (!closed_) {
        error_code ec;
        co_await closed_signal_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
}

}  // namespace vmha::peer::detail
