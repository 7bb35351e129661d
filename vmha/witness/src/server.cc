#include "server.h"

#include <list>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "asio.h"
#include "channel.h"
#include "lease_table.h"
#include "state_file.h"
#include "tls.h"
#include "witness_wire.h"

namespace vmha::witness {

namespace asio = boost::asio;
using boost::system::error_code;
using peer::detail::Channel;
using peer::detail::FrameType;
namespace wire = lease::wire;

struct Server::State : std::enable_shared_from_this<Server::State> {
    asio::io_context& io;
    WitnessConfig config;
    ServerLimits limits;
    std::shared_ptr<asio::ssl::context> tls;
    asio::ip::tcp::acceptor acceptor;
    LeaseTable table;
    std::list<std::weak_ptr<Channel>> connections;
    bool stopped = false;

    State(asio::io_context& i, WitnessConfig c, ServerLimits l)
        : io(i), config(std::move(c)), limits(l), acceptor(i) {}

    static std::string describe(const lease::LeaseKey& key) {
        return fmt::format("lease of module \"{}\" of pair {}", key.module, key.pair);
    }

    asio::awaitable<void> accept_loop() {
        auto self = shared_from_this();
        while (!stopped) {
            error_code ec;
            asio::ip::tcp::socket socket(io);
            co_await acceptor.async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
            if (stopped) co_return;
            if (ec) {
                spdlog::warn("accepting a connection failed: {}", ec.message());
                continue;
            }
            const auto ep = socket.remote_endpoint(ec);
            const std::string remote =
                ec ? std::string("unknown peer")
                   : fmt::format("{}:{}", ep.address().to_string(), ep.port());
            auto ch = std::make_shared<Channel>(std::move(socket), *tls, remote);
            connections.remove_if([](const std::weak_ptr<Channel>& w) { return w.expired(); });
            connections.push_back(ch);
            asio::co_spawn(io, serve(self, ch), asio::detached);
        }
    }

    static asio::awaitable<void> serve(std::shared_ptr<State> self, std::shared_ptr<Channel> ch) {
        const auto& limits = self->limits;
        if (auto st =
                co_await ch->handshake(asio::ssl::stream_base::server, limits.handshake_timeout);
            !st) {
            // The peer's certificate verdict when it failed, else what the handshake said.
            const bool verified = SSL_get_verify_result(ch->ssl()) == X509_V_OK;
            spdlog::warn("TLS handshake with {} failed: {}", ch->remote(),
                         verified ? st.error().message
                                  : peer::detail::describe_handshake_failure({}, ch->ssl()));
            ch->close();
            co_return;
        }
        auto hello = co_await ch->read_frame(limits.handshake_timeout);
        if (!hello || hello->type != FrameType::hello) {
            spdlog::warn("{} sent no HELLO: {}", ch->remote(),
                         hello ? fmt::format("got {}", peer::detail::to_string(hello->type))
                               : hello.error().message);
            ch->close();
            co_return;
        }
        auto node = wire::parse_hello(hello->payload, "node");
        Status identity = node ? peer::detail::check_peer_identity(ch->ssl(), *node, ch->remote())
                               : Status(Error(node.error().code, node.error().message));
        if (!identity) {
            spdlog::warn("refusing {}: {}", ch->remote(), identity.error().message);
            ch->send_and_close(FrameType::refuse,
                               nlohmann::json{{"reason", identity.error().message}});
            co_return;
        }
        const std::string who = fmt::format("node {} at {}", *node, ch->remote());
        spdlog::info("{} connected", who);
        ch->send(FrameType::hello, wire::hello("witness", self->config.name));
        for (;;) {
            auto frame = co_await ch->read_frame(limits.idle_timeout);
            if (self->stopped) co_return;
            if (!frame) {
                if (frame.error().is(errc::connection_lost)) {
                    spdlog::info("{} disconnected: {}", who, frame.error().message);
                } else {
                    spdlog::warn("closing the connection of {}: {}", who, frame.error().message);
                }
                ch->close();
                co_return;
            }
            if (frame->type == FrameType::ping) continue;
            if (frame->type != FrameType::message) {
                spdlog::warn("closing the connection of {}: unexpected {} frame", who,
                             peer::detail::to_string(frame->type));
                ch->close();
                co_return;
            }
            auto request = wire::parse_request(frame->payload);
            if (!request) {
                spdlog::warn("closing the connection of {}: {}", who, request.error().message);
                ch->close();
                co_return;
            }
            ch->send(FrameType::message, wire::encode(self->handle(*request, *node)));
        }
    }

    wire::Reply handle(const wire::Request& r, const std::string& node) {
        if (auto st = config.allows(node, r.key.pair, r.key.module); !st) {
            spdlog::warn("{}", st.error().message);
            return {r.id, st.error()};
        }
        const auto now = std::chrono::steady_clock::now();
        LeaseTable::Outcome o;
        switch (r.op) {
            case wire::Op::query:
                return {r.id, table.query(r.key, now)};
            case wire::Op::acquire:
                o = table.acquire(r.key, node, r.ttl, now);
                break;
            case wire::Op::renew:
                o = table.renew(r.key, node, r.ttl, now);
                break;
            case wire::Op::release:
                o = table.release(r.key, node, now);
                break;
        }
        if (o.change) {
            if (o.persist) {
                if (auto st = save_state(config.state_file, table.records_with(r.key, *o.change));
                    !st) {
                    spdlog::error("{} not changed: {}", describe(r.key), st.error().message);
                    return {r.id, Error(errc::io_error,
                                        fmt::format("the witness cannot record the {}: {}",
                                                    describe(r.key), st.error().message))};
                }
            }
            table.apply(r.key, *o.change);
        }
        if (!o.event.empty()) {
            spdlog::info("{} {}", describe(r.key), o.event);
        } else if (r.op != wire::Op::query) {
            spdlog::debug("{} {} by {}: holder \"{}\", {} ms left, epoch {}", describe(r.key),
                          wire::to_string(r.op), node, o.state.holder, o.state.remaining.count(),
                          o.state.epoch);
        }
        return {r.id, o.state};
    }
};

Result<std::unique_ptr<Server>> Server::create(asio::io_context& io, WitnessConfig config,
                                               ServerLimits limits) {
    auto tls = peer::detail::make_tls_context(
        config::Tls{config.tls_ca, config.tls_cert, config.tls_key}, config.name);
    if (!tls) return std::move(tls).error();
    auto records = load_state(config.state_file);
    if (!records) return std::move(records).error();
    auto state = std::make_shared<State>(io, std::move(config), limits);
    state->tls = std::move(*tls);
    state->table.load(*records, std::chrono::steady_clock::now());
    std::size_t held = 0;
    for (const auto& r : *records) {
        if (r.holder.empty()) continue;
        ++held;
        spdlog::info(
            "{} counts as held by {} (epoch {}) for its full TTL of {} ms from this restart",
            State::describe(r.key), r.holder, r.epoch, r.ttl.count());
    }
    spdlog::info("state file \"{}\": {} lease(s), {} held", state->config.state_file.string(),
                 records->size(), held);
    error_code ec;
    const auto address = asio::ip::make_address(state->config.listen_host, ec);
    if (ec) {
        return Error(errc::invalid_config, fmt::format("listen address \"{}\" is not an IP address",
                                                       state->config.listen_host));
    }
    const asio::ip::tcp::endpoint ep(address, state->config.listen_port);
    auto& a = state->acceptor;
    a.open(ep.protocol(), ec);
    if (!ec) a.set_option(asio::ip::tcp::acceptor::reuse_address(true), ec);
    if (!ec) a.bind(ep, ec);
    if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
        return Error(errc_from_errno(ec.value()),
                     fmt::format("cannot listen on {}:{}: {}", state->config.listen_host,
                                 state->config.listen_port, ec.message()));
    }
    return std::unique_ptr<Server>(new Server(std::move(state)));
}

Server::Server(std::shared_ptr<State> state) : state_(std::move(state)) {}
Server::~Server() {
    stop();
}

void Server::start() {
    spdlog::info("witness \"{}\" listening on {}:{}", state_->config.name,
                 state_->config.listen_host, state_->config.listen_port);
    asio::co_spawn(state_->io, state_->accept_loop(), asio::detached);
}

void Server::stop() {
    if (state_->stopped) return;
    state_->stopped = true;
    error_code ignored;
    state_->acceptor.close(ignored);
    for (auto& w : state_->connections) {
        if (auto ch = w.lock()) ch->close();
    }
    state_->connections.clear();
}

}  // namespace vmha::witness
