#include <vmha/peer/peer.h>

#include <algorithm>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "channel.h"
#include "hub_state.h"
#include "listener.h"
#include "module_peer.h"
#include "tls.h"

namespace vmha::peer {

using boost::system::error_code;
using detail::Channel;
using detail::FrameType;
using detail::ModulePeerImpl;

std::string_view to_string(Liveness liveness) {
    switch (liveness) {
        case Liveness::unknown: return "unknown";
        case Liveness::alive: return "alive";
        case Liveness::lost: return "lost";
    }
    return "unknown";
}

namespace detail {

Listener::Listener(std::weak_ptr<PeerHub::State> hub, asio::ip::tcp::acceptor acceptor, std::string where)
    : hub_(std::move(hub)), acceptor_(std::move(acceptor)), where_(std::move(where)) {}

void Listener::start() { asio::co_spawn(acceptor_.get_executor(), accept_loop(), asio::detached); }

void Listener::stop() {
    stopped_ = true;
    error_code ignored;
    acceptor_.close(ignored);
}

asio::awaitable<void> Listener::accept_loop() {
    auto self = shared_from_this();
    while (!stopped_) {
        error_code ec;
        auto socket = co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, ec));
        if (stopped_) break;
        if (ec) {
            spdlog::warn("control listener {}: accept failed: {}", where_, ec.message());
            continue;
        }
        asio::co_spawn(acceptor_.get_executor(), admit(std::move(socket)), asio::detached);
    }
}

asio::awaitable<void> Listener::admit(asio::ip::tcp::socket socket) {
    auto self = shared_from_this();
    auto hub = hub_.lock();
    if (!hub || hub->stopped) co_return;
    error_code ec;
    const auto remote_endpoint = socket.remote_endpoint(ec);
    const std::string remote =
        ec ? std::string("an unknown address")
           : fmt::format("{}:{}", remote_endpoint.address().to_string(), remote_endpoint.port());
    auto channel = std::make_shared<Channel>(std::move(socket), *hub->tls, remote);
    const Ms deadline = hub->options.handshake_timeout;
    hub.reset();  // not held across the handshake
    Status st = co_await channel->handshake(asio::ssl::stream_base::server, deadline);
    if (!st) {
        spdlog::error("control listener {}: TLS handshake with {} failed: {}", where_, remote,
                      SSL_get_verify_result(channel->ssl()) != X509_V_OK
                          ? describe_handshake_failure({}, channel->ssl())
                          : st.error().message);
        channel->close();
        co_return;
    }
    auto hello = co_await channel->read_frame(deadline);
    hub = hub_.lock();
    if (stopped_ || !hub || hub->stopped) {
        channel->close();
        co_return;
    }
    if (!hello || hello->type != FrameType::hello || !hello->payload.contains("module") ||
        !hello->payload["module"].is_string()) {
        spdlog::warn("control listener {}: {} did not start with a HELLO naming a module: {}", where_, remote,
                     hello ? fmt::format("got {}", to_string(hello->type)) : hello.error().message);
        channel->close();
        co_return;
    }
    const std::string module = hello->payload["module"].get<std::string>();
    auto it = hub->modules.find(module);
    auto peer = it == hub->modules.end() ? nullptr : it->second.lock();
    if (!peer) {
        const std::string reason = fmt::format("module \"{}\" is not configured on node \"{}\"", module, hub->node.name);
        spdlog::warn("control listener {}: {} asked for {}", where_, remote, reason);
        channel->send_and_close(FrameType::refuse, {{"reason", reason}});
        co_return;
    }
    peer->adopt(std::move(channel), hello->payload);
}

namespace {

// The hub's side of a ModulePeer: forwards to the implementation, unregisters on destruction.
class ModulePeerHandle final : public ModulePeer {
public:
    ModulePeerHandle(std::shared_ptr<PeerHub::State> hub, std::shared_ptr<ModulePeerImpl> impl)
        : hub_(std::move(hub)), impl_(std::move(impl)) {}
    ~ModulePeerHandle() override {
        impl_->stop();
        auto it = hub_->modules.find(impl_->module());
        if (it != hub_->modules.end() && it->second.lock() == impl_) hub_->modules.erase(it);
    }
    void start() override { impl_->start(); }
    void stop() override { impl_->stop(); }
    bool send(nlohmann::json message) override { return impl_->send(std::move(message)); }
    PeerStatus status() const override { return impl_->status(); }

private:
    std::shared_ptr<PeerHub::State> hub_;
    std::shared_ptr<ModulePeerImpl> impl_;
};

Result<asio::ip::address> ip_literal(const std::string& module, const std::string& what, const config::Host& host) {
    error_code ec;
    auto address = asio::ip::make_address(host.text, ec);
    if (ec) {
        return Error(errc::unsupported,
                     fmt::format("module \"{}\": {} \"{}\" is a host name; the peer channel needs an IP address there",
                                 module, what, host.text));
    }
    return address;
}

// One listener per local "address:port", shared by the modules that use it.
Status listen_on(const std::shared_ptr<PeerHub::State>& hub, const std::string& module, const std::string& local,
                 const asio::ip::tcp::endpoint& endpoint) {
    const std::string where = fmt::format("{}:{}", endpoint.address().to_string(), endpoint.port());
    if (hub->listeners.contains(where)) return {};
    asio::ip::tcp::acceptor acceptor(hub->executor);
    error_code ec;
    acceptor.open(endpoint.protocol(), ec);
    if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor.bind(endpoint, ec);
    if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
        return Error(errc_from_errno(ec.value()), fmt::format("module \"{}\": cannot listen on {} for the control channel: {}",
                                                              module, where, ec.message()));
    }
    auto listener = std::make_shared<Listener>(hub, std::move(acceptor), where);
    listener->start();
    hub->listeners[where] = listener;
    spdlog::info("node \"{}\": control channel listening on {}", local, where);
    return {};
}

}  // namespace
}  // namespace detail

PeerHub::PeerHub(std::shared_ptr<State> state) : state_(std::move(state)) {}

PeerHub::~PeerHub() {
    state_->stopped = true;
    for (auto& [where, listener] : state_->listeners) listener->stop();
    state_->listeners.clear();
}

Result<std::unique_ptr<PeerHub>> PeerHub::create(boost::asio::any_io_executor executor, const config::Node& node,
                                                 HubOptions options) {
    if (!node.tls) {
        return Error(errc::invalid_config,
                     fmt::format("node \"{}\": the node file has no \"tls\" section (ca, cert, key); the peer channel "
                                 "requires mutual TLS (see configs/vmha-certs.sh)",
                                 node.name));
    }
    auto tls = detail::make_tls_context(*node.tls, node.name);
    if (!tls) {
        return Error(tls.error().code, fmt::format("node \"{}\": {}", node.name, tls.error().message));
    }
    auto state = std::make_shared<State>();
    state->executor = std::move(executor);
    state->node = node;
    state->options = options;
    state->tls = std::move(*tls);
    return std::unique_ptr<PeerHub>(new PeerHub(std::move(state)));
}

Result<std::unique_ptr<ModulePeer>> PeerHub::attach(const config::Module& module, const std::string& module_yaml_text,
                                                    PeerEvents events) {
    using detail::ip_literal;
    const std::string& local = state_->node.name;
    const config::ModuleNode* here = module.node(local);
    const config::ModuleNode* there = module.peer_of(local);
    if (here == nullptr || there == nullptr) {
        return Error(errc::invalid_config,
                     fmt::format("module \"{}\" does not name this node \"{}\" and a peer", module.name, local));
    }
    if (state_->modules.contains(module.name) && !state_->modules[module.name].expired()) {
        return Error(errc::already_exists, fmt::format("module \"{}\" is attached already", module.name));
    }
    auto fingerprint = config_fingerprint(module_yaml_text);
    if (!fingerprint) {
        return Error(errc::invalid_config, fmt::format("module \"{}\": {}", module.name, fingerprint.error().message));
    }
    detail::PeerSetup setup;
    setup.module = module.name;
    setup.local = local;
    setup.peer = there->name;
    setup.interval = module.heartbeat.interval;
    setup.timeout = module.heartbeat.timeout;
    setup.fingerprint = std::move(*fingerprint);
    auto local_ip = ip_literal(module.name, fmt::format("node \"{}\" address", local), here->address);
    if (!local_ip) return std::move(local_ip).error();
    auto peer_ip = ip_literal(module.name, fmt::format("node \"{}\" address", there->name), there->address);
    if (!peer_ip) return std::move(peer_ip).error();
    setup.routes.push_back({"address", {*local_ip, here->control_port}, {*peer_ip, there->control_port}});
    for (const auto& path : module.heartbeat.paths) {
        auto mine = path.addresses.find(local);
        auto theirs = path.addresses.find(there->name);
        if (mine == path.addresses.end() || theirs == path.addresses.end()) {
            return Error(errc::invalid_config,
                         fmt::format("module \"{}\": heartbeat path \"{}\" needs an address for \"{}\" and \"{}\"",
                                     module.name, path.name, local, there->name));
        }
        auto a = ip_literal(module.name, fmt::format("heartbeat path \"{}\" address", path.name), mine->second);
        if (!a) return std::move(a).error();
        auto b = ip_literal(module.name, fmt::format("heartbeat path \"{}\" address", path.name), theirs->second);
        if (!b) return std::move(b).error();
        setup.paths.push_back({path.name, {*a, path.port}, {*b, path.port}});
        const bool known = std::any_of(setup.routes.begin(), setup.routes.end(), [&](const auto& r) {
            return r.local.address() == *a && r.remote.address() == *b;
        });
        if (!known) setup.routes.push_back({path.name, {*a, here->control_port}, {*b, there->control_port}});
    }

    for (const auto& route : setup.routes) {
        if (Status st = detail::listen_on(state_, module.name, local, route.local); !st) return std::move(st).error();
    }
    auto impl = std::make_shared<ModulePeerImpl>(state_, std::move(setup), std::move(events));
    state_->modules[module.name] = impl;
    return std::unique_ptr<ModulePeer>(new detail::ModulePeerHandle(state_, std::move(impl)));
}

}  // namespace vmha::peer
