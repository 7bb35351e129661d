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
    for (const auto& client : clients_) client->close(ignored);
    clients_.clear();
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
        auto client = std::make_shared<Protocol::socket>(std::move(socket));
        clients_.insert(client);
        asio::co_spawn(io_, serve(client), asio::detached);
    }
}

asio::awaitable<void> ControlServer::serve(std::shared_ptr<Protocol::socket> socket) {
    // A client that sends nothing for 30 s is closed.
    asio::steady_timer deadline(io_);
    deadline.expires_after(std::chrono::seconds(30));
    deadline.async_wait([socket](const error_code& e) {
        if (!e) {
            error_code ignored;
            socket->close(ignored);
        }
    });
    asio::streambuf buffer(kMaxRequest);
    error_code ec;
    const std::size_t n = co_await asio::async_read_until(
        *socket, buffer, '\n', asio::redirect_error(asio::use_awaitable, ec));
    deadline.cancel();
    nlohmann::json reply;
    if (ec) {
        reply = error_reply(vmha::Error(vmha::errc::invalid_argument,
                                        ec == asio::error::not_found
                                            ? "a control request is one JSON line of at most 64 KiB"
                                            : fmt::format("reading the request failed: {}", ec.message())));
    } else {
        std::string line(asio::buffers_begin(buffer.data()),
                         asio::buffers_begin(buffer.data()) + static_cast<std::ptrdiff_t>(n));
        // The handler may answer later (demote drains writes first).
        auto promise = std::make_shared<std::optional<nlohmann::json>>();
        auto timer = std::make_shared<asio::steady_timer>(io_, asio::steady_timer::time_point::max());
        reply = answer(line, [promise, timer](nlohmann::json r) {
            *promise = std::move(r);
            timer->cancel();
        });
        if (reply.is_null()) {
            while (!*promise && !stopped_) {
                error_code wait_ec;
                timer->expires_at(asio::steady_timer::time_point::max());
                co_await timer->async_wait(asio::redirect_error(asio::use_awaitable, wait_ec));
            }
            if (*promise) reply = std::move(**promise);
        }
    }
    if (!stopped_ && !reply.is_null()) {
        const std::string out = reply.dump() + "\n";
        co_await asio::async_write(*socket, asio::buffer(out), asio::redirect_error(asio::use_awaitable, ec));
        socket->shutdown(Protocol::socket::shutdown_both, ec);
    }
    clients_.erase(socket);
}

// Parses and dispatches one request line. Returns the reply when it is known at once (a
// malformed request), else null: the handler answers through `reply`.
nlohmann::json ControlServer::answer(const std::string& line, std::function<void(nlohmann::json)> reply) {
    auto request = nlohmann::json::parse(line, nullptr, false);
    if (request.is_discarded() || !request.is_object() || !request.contains("verb") ||
        !request["verb"].is_string()) {
        return error_reply(vmha::Error(vmha::errc::invalid_argument,
                                       "a control request is a JSON object with a \"verb\""));
    }
    for (const char* flag : {"force", "mark", "full"}) {
        if (request.contains(flag) && !request[flag].is_boolean()) {
            return error_reply(vmha::Error(vmha::errc::invalid_argument,
                                           fmt::format("\"{}\" must be true or false", flag)));
        }
    }
    try {
        handler_(request, std::move(reply));
    } catch (const std::exception& e) {
        return error_reply(vmha::Error(vmha::errc::invalid_argument,
                                       fmt::format("the request could not be handled: {}", e.what())));
    }
    return nullptr;
}

}  // namespace imagesync
