#include "control/control_server.h"

#include <sys/stat.h>

#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace imagesync {

using boost::system::error_code;
using Protocol = asio::local::stream_protocol;

namespace {
constexpr std::size_t kMaxRequest = 64 * 1024;
}

nlohmann::json error_reply(const vmha::Error& error) {
    const bool ours = &error.code.category() == &vmha::error_category();
    return {{"ok", false},
            {"code", ours ? std::string(vmha::errc_name(static_cast<vmha::errc>(error.code.value())))
                          : error.code.message()},
            {"error", error.message}};
}

ControlServer::ControlServer(asio::io_context& io, std::filesystem::path path, Handler handler)
    : io_(io), path_(std::move(path)), handler_(std::move(handler)), acceptor_(io) {}

ControlServer::~ControlServer() { stop(); }

vmha::Status ControlServer::listen() {
    struct stat st {};
    if (::lstat(path_.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            return vmha::Error(vmha::errc::already_exists,
                               fmt::format("control socket path \"{}\" exists and is not a socket",
                                           path_.string()));
        }
        Protocol::socket probe(io_);
        error_code ec;
        probe.connect(Protocol::endpoint(path_.string()), ec);
        if (!ec) {
            return vmha::Error(vmha::errc::busy,
                               fmt::format("control socket \"{}\" is served by another process",
                                           path_.string()));
        }
        std::filesystem::remove(path_);
    }
    error_code ec;
    acceptor_.open(Protocol(), ec);
    if (!ec) acceptor_.bind(Protocol::endpoint(path_.string()), ec);
    if (!ec) acceptor_.listen(16, ec);
    if (ec) {
        return vmha::Error(vmha::errc_from_errno(ec.value()),
                           fmt::format("cannot listen on control socket \"{}\": {}", path_.string(),
                                       ec.message()));
    }
    ::chmod(path_.c_str(), 0600);
    return {};
}

void ControlServer::start() { asio::co_spawn(io_, accept_loop(), asio::detached); }

void ControlServer::stop() {
    if (stopped_) return;
    stopped_ = true;
    error_code ignored;
    if (acceptor_.is_open()) {
        acceptor_.close(ignored);
        std::error_code also_ignored;
        std::filesystem::remove(path_, also_ignored);
    }
}

asio::awaitable<void> ControlServer::accept_loop() {
    while (!stopped_) {
        error_code ec;
        auto socket = co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, ec));
        if (ec || stopped_) break;
        asio::co_spawn(io_, serve(std::move(socket)), asio::detached);
    }
}

asio::awaitable<void> ControlServer::serve(Protocol::socket socket) {
    asio::streambuf buffer(kMaxRequest);
    error_code ec;
    const std::size_t n = co_await asio::async_read_until(
        socket, buffer, '\n', asio::redirect_error(asio::use_awaitable, ec));
    nlohmann::json reply;
    if (ec) {
        reply = error_reply(vmha::Error(vmha::errc::invalid_argument,
                                        ec == asio::error::not_found
                                            ? "a control request is one JSON line of at most 64 KiB"
                                            : fmt::format("reading the request failed: {}", ec.message())));
    } else {
        std::string line(asio::buffers_begin(buffer.data()),
                         asio::buffers_begin(buffer.data()) + static_cast<std::ptrdiff_t>(n));
        auto request = nlohmann::json::parse(line, nullptr, false);
        if (request.is_discarded() || !request.is_object() || !request.contains("verb") ||
            !request["verb"].is_string()) {
            reply = error_reply(vmha::Error(vmha::errc::invalid_argument,
                                            "a control request is a JSON object with a \"verb\""));
        } else {
            // The handler may answer later (demote drains writes first).
            auto promise = std::make_shared<std::optional<nlohmann::json>>();
            auto timer = std::make_shared<asio::steady_timer>(io_, asio::steady_timer::time_point::max());
            handler_(request, [promise, timer](nlohmann::json r) {
                *promise = std::move(r);
                timer->cancel();
            });
            while (!*promise) {
                error_code wait_ec;
                co_await timer->async_wait(asio::redirect_error(asio::use_awaitable, wait_ec));
            }
            reply = std::move(**promise);
        }
    }
    const std::string out = reply.dump() + "\n";
    co_await asio::async_write(socket, asio::buffer(out), asio::redirect_error(asio::use_awaitable, ec));
    socket.shutdown(Protocol::socket::shutdown_both, ec);
}

}  // namespace imagesync
