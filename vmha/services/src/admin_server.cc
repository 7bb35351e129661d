#include <vmha/services/admin_server.h>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <optional>
#include <set>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace vmha::services {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using boost::system::error_code;
using Protocol = asio::local::stream_protocol;

namespace {
constexpr auto idle_timeout = std::chrono::minutes(5);
constexpr auto write_timeout = std::chrono::seconds(10);
}  // namespace

nlohmann::json admin_ok_reply(nlohmann::json result) {
    return {{"version", admin_protocol_version}, {"ok", true}, {"result", std::move(result)}};
}

nlohmann::json admin_error_reply(const vmha::Error& error) {
    const bool ours = &error.code.category() == &vmha::error_category();
    return {{"version", admin_protocol_version},
            {"ok", false},
            {"code", ours ? std::string(errc_name(static_cast<errc>(error.code.value())))
                          : std::string("internal")},
            {"error", error.message}};
}

struct AdminServer::Impl : std::enable_shared_from_this<Impl> {
    struct Connection {
        explicit Connection(asio::io_context& io) : socket(io), deadline(io), waiter(io) {}
        Protocol::socket socket;
        asio::steady_timer deadline;  // idle between requests, or writing a reply
        asio::steady_timer waiter;    // wakes the coroutine when the handler answers
        ucred client{};               // SO_PEERCRED: who asks (handed to the handler)
        bool closed = false;
        void close() {
            closed = true;
            error_code ignored;
            socket.close(ignored);
            deadline.cancel();
            waiter.cancel();
        }
    };

    Impl(asio::io_context& io_context, fs::path p, AdminHandler& h)
        : io(io_context), path(std::move(p)), handler(h), acceptor(io) {}

    vmha::Status listen() {
        const std::string text = path.string();
        if (text.empty() || text.size() >= sizeof(sockaddr_un::sun_path)) {
            return vmha::Error(errc::invalid_argument,
                               fmt::format("admin socket path \"{}\" is empty or longer than {} bytes",
                                           text, sizeof(sockaddr_un::sun_path) - 1));
        }
        struct stat st {};
        if (::lstat(path.c_str(), &st) == 0) {
            if (!S_ISSOCK(st.st_mode)) {
                return vmha::Error(errc::already_exists,
                                   fmt::format("admin socket path \"{}\" exists and is not a socket",
                                               text));
            }
            Protocol::socket probe(io);
            error_code ec;
            probe.connect(Protocol::endpoint(text), ec);  // a unix connect does not block
            if (!ec) {
                return vmha::Error(errc::busy,
                                   fmt::format("admin socket \"{}\" is served by another process "
                                               "(is another vmhad running?)",
                                               text));
            }
            spdlog::info("admin socket \"{}\" is stale (nobody accepts on it); replacing it", text);
            std::error_code ignored;
            fs::remove(path, ignored);
        }
        std::error_code dir_ec;
        fs::create_directories(path.parent_path(), dir_ec);
        error_code ec;
        acceptor.open(Protocol(), ec);
        if (!ec) acceptor.bind(Protocol::endpoint(text), ec);
        if (!ec && ::chmod(path.c_str(), 0600) != 0) ec = error_code(errno, boost::system::system_category());
        if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
        if (ec) {
            error_code ignored;
            acceptor.close(ignored);
            return vmha::Error(errc_from_errno(ec.value()),
                               fmt::format("cannot listen on admin socket \"{}\": {}", text,
                                           ec.message()));
        }
        if (::stat(path.c_str(), &st) == 0) inode = st.st_ino;
        return {};
    }

    void stop() {
        if (stopped) return;
        stopped = true;
        for (const auto& c : connections) c->close();
        connections.clear();
        if (acceptor.is_open()) {
            error_code ignored;
            acceptor.close(ignored);
            struct stat st {};
            if (::stat(path.c_str(), &st) == 0 && st.st_ino == inode) {
                std::error_code also_ignored;
                fs::remove(path, also_ignored);
            }
        }
    }

    static asio::awaitable<void> accept_loop(std::shared_ptr<Impl> self) {
        while (!self->stopped) {
            auto c = std::make_shared<Connection>(self->io);
            error_code ec;
            co_await self->acceptor.async_accept(c->socket, asio::redirect_error(asio::use_awaitable, ec));
            if (self->stopped) break;
            if (ec) {
                if (ec == asio::error::operation_aborted) break;
                spdlog::warn("admin socket \"{}\": accept failed: {}", self->path.string(), ec.message());
                continue;
            }
            self->connections.insert(c);
            asio::co_spawn(self->io, serve(self, c), asio::detached);
        }
    }

    static std::optional<vmha::Error> refused_peer(Protocol::socket& socket) {
        ucred cred{};
        socklen_t len = sizeof cred;
        if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
            return vmha::Error(errc::permission_denied, "the client's credentials are unknown");
        }
        if (cred.uid != 0 && cred.uid != ::geteuid()) {
            return vmha::Error(errc::permission_denied,
                               fmt::format("uid {} may not use vmhad's admin socket (root only)",
                                           cred.uid));
        }
        return std::nullopt;
    }

    // Checks one parsed line; an Error to answer, or nullopt to dispatch.
    static std::optional<vmha::Error> check_request(const nlohmann::json& request) {
        if (!request.contains("version") || !request["version"].is_number_integer()) {
            return vmha::Error(errc::invalid_argument,
                               fmt::format("every request carries \"version\": {}",
                                           admin_protocol_version));
        }
        if (request["version"].get<long long>() != admin_protocol_version) {
            return vmha::Error(errc::version_mismatch,
                               fmt::format("request version {} is not supported; this vmhad speaks "
                                           "version {}",
                                           request["version"].dump(), admin_protocol_version));
        }
        if (request.contains("flags") &&
            (!request["flags"].is_number_unsigned() || request["flags"].get<unsigned long long>() != 0)) {
            return vmha::Error(errc::invalid_argument, "\"flags\" is reserved and must be 0");
        }
        if (!request.contains("verb") || !request["verb"].is_string() ||
            request["verb"].get<std::string>().empty()) {
            return vmha::Error(errc::invalid_argument, "a request names its \"verb\" (a string)");
        }
        if (request.contains("module") && !request["module"].is_string()) {
            return vmha::Error(errc::invalid_argument, "\"module\" must be a string");
        }
        return std::nullopt;
    }

    static asio::awaitable<bool> send(std::shared_ptr<Connection> c, const nlohmann::json& reply) {
        const std::string out = reply.dump() + "\n";
        c->deadline.expires_after(write_timeout);
        c->deadline.async_wait([c](const error_code& ec) {
            if (!ec) c->close();
        });
        error_code ec;
        co_await asio::async_write(c->socket, asio::buffer(out), asio::redirect_error(asio::use_awaitable, ec));
        c->deadline.cancel();
        co_return !ec && !c->closed;
    }

    static asio::awaitable<void> serve(std::shared_ptr<Impl> self, std::shared_ptr<Connection> c) {
        if (auto refused = refused_peer(c->socket)) {
            spdlog::warn("admin socket: {}", refused->message);
            co_await send(c, admin_error_reply(*refused));
            self->finish(c);
            co_return;
        }
        socklen_t cred_len = sizeof c->client;
        (void)::getsockopt(c->socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &c->client, &cred_len);
        std::string buffer;
        while (!c->closed && !self->stopped) {
            c->deadline.expires_after(idle_timeout);
            c->deadline.async_wait([c](const error_code& ec) {
                if (!ec) c->close();
            });
            error_code ec;
            const std::size_t n = co_await asio::async_read_until(
                c->socket, asio::dynamic_buffer(buffer, admin_max_line + 1), '\n',
                asio::redirect_error(asio::use_awaitable, ec));
            c->deadline.cancel();
            if (c->closed || self->stopped) break;
            if (ec == asio::error::not_found) {
                spdlog::warn("admin socket: a request line longer than {} bytes; closing the "
                             "connection",
                             admin_max_line);
                co_await send(c, admin_error_reply(vmha::Error(
                                     errc::invalid_argument,
                                     fmt::format("a request is one JSON line of at most 64 KiB ({} bytes)",
                                                 admin_max_line))));
                break;
            }
            if (ec) break;  // the client went away
            const std::string line = buffer.substr(0, n - 1);
            buffer.erase(0, n);
            auto request = nlohmann::json::parse(line, nullptr, false);
            if (request.is_discarded() || !request.is_object()) {
                spdlog::warn("admin socket: a request that is not a JSON object; closing the connection");
                co_await send(c, admin_error_reply(vmha::Error(
                                     errc::invalid_argument, "a request is one JSON object on one line")));
                break;
            }
            nlohmann::json reply;
            if (auto bad = check_request(request)) {
                reply = admin_error_reply(*bad);
            } else {
                auto result = co_await dispatch(self, c, request);
                if (!result) break;  // closed or stopped while the handler worked
                reply = *result ? admin_ok_reply(std::move(result->value()))
                                : admin_error_reply(result->error());
            }
            if (!co_await send(c, reply)) break;
        }
        self->finish(c);
    }

    // Runs the handler and waits for its answer; nullopt when the connection closed meanwhile.
    static asio::awaitable<std::optional<vmha::Result<nlohmann::json>>> dispatch(
        std::shared_ptr<Impl> self, std::shared_ptr<Connection> c, const nlohmann::json& request) {
        const std::string verb = request["verb"].get<std::string>();
        auto answer = std::make_shared<std::optional<vmha::Result<nlohmann::json>>>();
        std::weak_ptr<Connection> weak = c;
        // Who asks, as the kernel says (never as the client says): the handler logs it.
        nlohmann::json with_client = request;
        with_client["client"] = {{"uid", c->client.uid}, {"pid", c->client.pid}};
        self->handler.handle(verb, with_client, [answer, weak, verb](vmha::Result<nlohmann::json> r) {
            if (*answer) {
                spdlog::error("admin verb \"{}\" answered twice; the second answer is dropped", verb);
                return;
            }
            *answer = std::move(r);
            if (auto conn = weak.lock()) conn->waiter.cancel();
        });
        while (!*answer && !c->closed && !self->stopped) {
            c->waiter.expires_at(asio::steady_timer::time_point::max());
            error_code ec;
            co_await c->waiter.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        }
        if (!*answer || c->closed) co_return std::nullopt;
        co_return std::move(*answer);
    }

    void finish(const std::shared_ptr<Connection>& c) {
        error_code ignored;
        c->socket.shutdown(Protocol::socket::shutdown_both, ignored);
        c->close();
        connections.erase(c);
    }

    asio::io_context& io;
    fs::path path;
    AdminHandler& handler;
    Protocol::acceptor acceptor;
    std::set<std::shared_ptr<Connection>> connections;
    ino_t inode = 0;
    bool stopped = false;
};

AdminServer::AdminServer(asio::io_context& io, fs::path socket_path, AdminHandler& handler)
    : impl_(std::make_shared<Impl>(io, std::move(socket_path), handler)) {}

AdminServer::~AdminServer() { impl_->stop(); }

vmha::Status AdminServer::listen() { return impl_->listen(); }

void AdminServer::start() {
    asio::co_spawn(impl_->io, Impl::accept_loop(impl_), asio::detached);
}

void AdminServer::stop() { impl_->stop(); }

const fs::path& AdminServer::socket_path() const { return impl_->path; }

std::size_t AdminServer::connections() const { return impl_->connections.size(); }

}  // namespace vmha::services
