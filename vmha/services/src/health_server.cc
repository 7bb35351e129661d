#include <vmha/services/health_server.h>

#include <set>
#include <string_view>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace vmha::services {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;
using tcp = asio::ip::tcp;

namespace {

constexpr auto read_deadline = std::chrono::seconds(10);
constexpr std::uint32_t header_limit = 8 * 1024;
constexpr std::uint64_t body_limit = 1024;

// The module a path asks about, and which flavour of answer it wants.
struct Route {
    enum class Kind { health, ready_txt, none } kind = Kind::none;
    std::string module;
};

Route route(std::string_view target) {
    if (auto q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
    auto valid = [](std::string_view m) {
        return !m.empty() && m.find('/') == std::string_view::npos && m != "." && m != "..";
    };
    constexpr std::string_view health = "/health/";
    constexpr std::string_view modules = "/var/modules/";
    constexpr std::string_view ready = "/ready.txt";
    if (target.starts_with(health)) {
        const auto m = target.substr(health.size());
        if (valid(m)) return {Route::Kind::health, std::string(m)};
    } else if (target.starts_with(modules) && target.ends_with(ready) &&
               target.size() > modules.size() + ready.size()) {
        const auto m = target.substr(modules.size(), target.size() - modules.size() - ready.size());
        if (valid(m)) return {Route::Kind::ready_txt, std::string(m)};
    }
    return {};
}

config::Host host_of(const asio::ip::address& address) {
    asio::ip::address a = address;
    if (a.is_v6() && a.to_v6().is_v4_mapped()) {
        a = asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6());
    }
    return {a.is_v4() ? config::Host::Kind::ipv4 : config::Host::Kind::ipv6, a.to_string()};
}

}  // namespace

struct HealthServer::Impl : std::enable_shared_from_this<Impl> {
    struct Endpoint {
        explicit Endpoint(asio::io_context& io) : acceptor(io) {}
        tcp::acceptor acceptor;
        std::vector<config::Cidr> allow;
        tcp::endpoint bound;
    };

    Impl(asio::io_context& io_context, Query q) : io(io_context), query(std::move(q)) {}

    vmha::Status listen(const std::string& address, std::uint16_t port, std::vector<config::Cidr> allow) {
        error_code ec;
        const auto ip = asio::ip::make_address(address, ec);
        if (ec) {
            return vmha::Error(errc::invalid_argument,
                               fmt::format("health check: \"{}\" is not an IP address", address));
        }
        auto e = std::make_shared<Endpoint>(io);
        e->allow = std::move(allow);
        const tcp::endpoint where(ip, port);
        e->acceptor.open(where.protocol(), ec);
        if (!ec) e->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
        if (!ec) e->acceptor.bind(where, ec);
        if (!ec) e->acceptor.listen(asio::socket_base::max_listen_connections, ec);
        if (!ec) e->bound = e->acceptor.local_endpoint(ec);
        if (ec) {
            return vmha::Error(errc_from_errno(ec.value()),
                               fmt::format("health check: cannot listen on {}:{}: {}", address,
                                           port, ec.message()));
        }
        endpoints.push_back(e);
        if (started) asio::co_spawn(io, accept_loop(shared_from_this(), e), asio::detached);
        return {};
    }

    void start() {
        if (started) return;
        started = true;
        for (const auto& e : endpoints) asio::co_spawn(io, accept_loop(shared_from_this(), e), asio::detached);
    }

    void stop() {
        if (stopped) return;
        stopped = true;
        error_code ignored;
        for (const auto& e : endpoints) e->acceptor.close(ignored);
        for (const auto& s : sessions) s->socket().close(ignored);
        sessions.clear();
    }

    static asio::awaitable<void> accept_loop(std::shared_ptr<Impl> self, std::shared_ptr<Endpoint> e) {
        while (!self->stopped) {
            error_code ec;
            tcp::socket socket = co_await e->acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
            if (self->stopped || ec == asio::error::operation_aborted) break;
            if (ec) {
                spdlog::warn("health check on {}: accept failed: {}", fmt::to_string(e->bound.port()),
                             ec.message());
                continue;
            }
            auto stream = std::make_shared<beast::tcp_stream>(std::move(socket));
            self->sessions.insert(stream);
            asio::co_spawn(self->io, serve(self, e, stream), asio::detached);
        }
    }

    bool allowed(const Endpoint& e, const tcp::endpoint& remote) const {
        if (e.allow.empty()) return true;
        const config::Host host = host_of(remote.address());
        for (const auto& cidr : e.allow) {
            if (cidr.contains(host)) return true;
        }
        return false;
    }

    http::response<http::string_body> answer(const http::request<http::string_body>& req, bool permitted) {
        auto make = [&](http::status status, std::string body) {
            http::response<http::string_body> res{status, req.version()};
            res.set(http::field::server, "vmhad");
            res.set(http::field::content_type, "text/plain");
            res.set(http::field::cache_control, "no-store");
            res.body() = std::move(body);
            res.prepare_payload();
            return res;
        };
        if (!permitted) return make(http::status::forbidden, "Forbidden\n");
        const bool head = req.method() == http::verb::head;
        if (req.method() != http::verb::get && !head) {
            auto res = make(http::status::method_not_allowed, "Method Not Allowed\n");
            res.set(http::field::allow, "GET, HEAD");
            return res;
        }
        const Route r = route(std::string_view(req.target().data(), req.target().size()));
        std::optional<bool> ready;
        if (r.kind != Route::Kind::none) ready = query(r.module);
        http::response<http::string_body> res;
        switch (r.kind) {
            case Route::Kind::health:
                if (!ready) res = make(http::status::not_found, "no such module\n");
                else res = *ready ? make(http::status::ok, "OK\n") : make(http::status::service_unavailable, "NOK\n");
                break;
            case Route::Kind::ready_txt:
                res = ready.value_or(false) ? make(http::status::ok, "OK") : make(http::status::not_found, "");
                break;
            case Route::Kind::none:
                res = make(http::status::not_found, "Not Found\n");
                break;
        }
        if (head) {  // the same header, no body
            const auto length = res.body().size();
            res.body().clear();
            res.content_length(length);
        }
        return res;
    }

    static asio::awaitable<void> serve(std::shared_ptr<Impl> self, std::shared_ptr<Endpoint> e,
                                       std::shared_ptr<beast::tcp_stream> stream) {
        error_code ec;
        const tcp::endpoint remote = stream->socket().remote_endpoint(ec);
        const bool permitted = !ec && self->allowed(*e, remote);
        if (!permitted && !ec) {
            spdlog::debug("health check: client {} is not in the allow list", remote.address().to_string());
        }
        beast::flat_buffer buffer;
        while (!self->stopped) {
            http::request_parser<http::string_body> parser;
            parser.header_limit(header_limit);
            parser.body_limit(body_limit);
            stream->expires_after(read_deadline);
            co_await http::async_read(*stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
            if (self->stopped) break;
            if (ec) {
                if (ec != http::error::end_of_stream && ec != beast::error::timeout &&
                    ec != asio::error::eof && ec != asio::error::connection_reset) {
                    // A malformed or oversized request: tell the client, close this connection only.
                    http::response<http::string_body> bad{http::status::bad_request, 11};
                    bad.set(http::field::server, "vmhad");
                    bad.set(http::field::connection, "close");
                    bad.body() = "Bad Request\n";
                    bad.prepare_payload();
                    stream->expires_after(read_deadline);
                    co_await http::async_write(*stream, bad, asio::redirect_error(asio::use_awaitable, ec));
                }
                break;
            }
            const auto& req = parser.get();
            auto res = self->answer(req, permitted);
            const bool keep_alive = permitted && req.keep_alive();
            res.keep_alive(keep_alive);
            stream->expires_after(read_deadline);
            co_await http::async_write(*stream, res, asio::redirect_error(asio::use_awaitable, ec));
            if (ec || !keep_alive) break;
        }
        stream->socket().shutdown(tcp::socket::shutdown_send, ec);
        stream->close();
        self->sessions.erase(stream);
    }

    asio::io_context& io;
    Query query;
    std::vector<std::shared_ptr<Endpoint>> endpoints;
    std::set<std::shared_ptr<beast::tcp_stream>> sessions;
    bool started = false;
    bool stopped = false;
};

HealthServer::HealthServer(asio::io_context& io, Query query)
    : impl_(std::make_shared<Impl>(io, std::move(query))) {}

HealthServer::~HealthServer() { impl_->stop(); }

vmha::Status HealthServer::listen(const std::string& address, std::uint16_t port,
                                  std::vector<config::Cidr> allow) {
    return impl_->listen(address, port, std::move(allow));
}

void HealthServer::start() { impl_->start(); }
void HealthServer::stop() { impl_->stop(); }

std::vector<tcp::endpoint> HealthServer::endpoints() const {
    std::vector<tcp::endpoint> out;
    for (const auto& e : impl_->endpoints) out.push_back(e->bound);
    return out;
}

}  // namespace vmha::services
