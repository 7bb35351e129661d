#include "module_peer.h"

#include <algorithm>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "tls.h"

namespace vmha::peer::detail {

using boost::system::error_code;

namespace {

std::string format_ms(Ms d) {
    return d.count() % 1000 == 0 ? fmt::format("{}s", d.count() / 1000) : fmt::format("{}ms", d.count());
}

}  // namespace

ModulePeerImpl::ModulePeerImpl(std::shared_ptr<PeerHub::State> hub, PeerSetup setup, PeerEvents events)
    : hub_(std::move(hub)),
      setup_(std::move(setup)),
      events_(std::move(events)),
      reconnect_(hub_->executor),
      tick_(hub_->executor) {
    for (const auto& path : setup_.paths) {
        paths_.push_back(std::make_unique<Path>(path, hub_->executor));
    }
}

void ModulePeerImpl::start() {
    if (started_ || stopped_) return;
    started_ = true;
    auto self = shared_from_this();
    for (std::size_t i = 0; i < paths_.size(); ++i) asio::co_spawn(hub_->executor, path_loop(i), asio::detached);
    asio::co_spawn(hub_->executor, tick_loop(), asio::detached);
    if (connects()) asio::co_spawn(hub_->executor, connect_loop(), asio::detached);
    spdlog::info("module \"{}\": peer channel to node \"{}\" started ({} at {}:{})", setup_.module, setup_.peer,
                 connects() ? "connecting" : "accepting", setup_.routes.front().local.address().to_string(),
                 setup_.routes.front().local.port());
}

void ModulePeerImpl::stop() {
    if (stopped_) return;
    stopped_ = true;
    if (channel_) channel_->close();
    channel_.reset();
    if (connecting_) connecting_->close();
    connecting_.reset();
    error_code ignored;
    for (auto& path : paths_) {
        if (path->socket) path->socket->close(ignored);
        path->retry.cancel();
    }
    reconnect_.cancel();
    tick_.cancel();
}

bool ModulePeerImpl::send(nlohmann::json message) {
    if (stopped_ || !channel_ || channel_->closed()) return false;
    if (!message.is_object()) {
        internal_error(fmt::format("module \"{}\": a peer message must be a JSON object, not {}", setup_.module,
                                   message.dump()));
    }
    channel_->send(FrameType::message, message);
    return true;
}

PeerStatus ModulePeerImpl::status() const {
    const auto now = Clock::now();
    auto age = [&](const std::optional<Clock::time_point>& t) -> std::optional<Ms> {
        if (!t) return std::nullopt;
        return std::chrono::duration_cast<Ms>(now - *t);
    };
    PeerStatus out;
    out.module = setup_.module;
    out.peer_node = setup_.peer;
    out.channel_up = channel_ != nullptr;
    out.channel_reason = channel_reason_;
    out.refused = refused_;
    out.liveness = liveness_;
    out.liveness_reason = liveness_reason_;
    for (const auto& path : paths_) {
        out.paths.push_back(PathStatus{path->config.name, path->bound, path->error, age(path->heard), path->accepted,
                                       path->rejected, path->last_rejection});
    }
    return out;
}

nlohmann::json ModulePeerImpl::hello() const {
    return {{"version", protocol_version},
            {"node", setup_.local},
            {"module", setup_.module},
            {"fingerprint", setup_.fingerprint}};
}

Status ModulePeerImpl::check_hello(const nlohmann::json& hello) const {
    const auto text = [&](const char* key) {
        return hello.contains(key) && hello[key].is_string() ? hello[key].get<std::string>() : std::string();
    };
    if (!hello.contains("version") || !hello["version"].is_number_unsigned() || hello["version"] != protocol_version) {
        return Error(errc::version_mismatch,
                     fmt::format("module \"{}\": node \"{}\" speaks peer protocol version {}, this node {}",
                                 setup_.module, setup_.peer, hello.value("version", nlohmann::json()).dump(),
                                 protocol_version));
    }
    if (text("node") != setup_.peer || text("module") != setup_.module) {
        return Error(errc::peer_mismatch,
                     fmt::format("module \"{}\": the peer introduced itself as node \"{}\" for module \"{}\", "
                                 "expected node \"{}\"",
                                 setup_.module, text("node"), text("module"), setup_.peer));
    }
    if (!hello.contains("fingerprint") || !hello["fingerprint"].is_object()) {
        return Error(errc::protocol_error,
                     fmt::format("module \"{}\": node \"{}\" sent a HELLO without a config fingerprint",
                                 setup_.module, setup_.peer));
    }
    Fingerprint theirs;
    for (const auto& [key, value] : hello["fingerprint"].items()) {
        theirs[key] = value.is_string() ? value.get<std::string>() : value.dump();
    }
    const auto differing = fingerprint_differences(setup_.fingerprint, theirs);
    if (!differing.empty()) {
        return Error(errc::peer_mismatch, fmt::format("module \"{}\": the peer's config differs in {}", setup_.module,
                                                      fmt::join(differing, ", ")));
    }
    return {};
}

void ModulePeerImpl::refused(const std::string& reason) {
    if (stopped_) return;
    const bool repeated = reason == refused_;
    refused_ = reason;
    channel_reason_ = "refused: " + reason;
    if (repeated) {
        spdlog::debug("{} (again)", reason);
        return;
    }
    spdlog::error("{}", reason);
    if (events_.on_refused) events_.on_refused(reason);
}

void ModulePeerImpl::establish(std::shared_ptr<Channel> channel) {
    if (channel_) {
        spdlog::info("module \"{}\": a new connection from node \"{}\" replaces the current one", setup_.module,
                     setup_.peer);
        channel_->close();
    }
    channel_ = channel;
    refused_.clear();
    tx_key_ = export_heartbeat_key(channel->ssl(), setup_.module, setup_.local);
    rx_key_ = export_heartbeat_key(channel->ssl(), setup_.module, setup_.peer);
    for (auto& path : paths_) {
        path->tx_sequence = 0;
        path->rx_last = 0;
    }
    channel_reason_ = fmt::format("paired with node \"{}\" at {}", setup_.peer, channel->remote());
    spdlog::info("module \"{}\": {}", setup_.module, channel_reason_);
    asio::co_spawn(hub_->executor, read_loop(channel), asio::detached);
    if (events_.on_channel) events_.on_channel(true, channel_reason_);
}

void ModulePeerImpl::channel_down(const std::shared_ptr<Channel>& channel, const std::string& reason) {
    channel->close();
    if (stopped_ || channel_ != channel) return;
    channel_.reset();
    channel_reason_ = reason;
    spdlog::warn("module \"{}\": control channel to node \"{}\" is down: {}", setup_.module, setup_.peer, reason);
    if (events_.on_channel) events_.on_channel(false, reason);
}

void ModulePeerImpl::adopt(std::shared_ptr<Channel> channel, const nlohmann::json& hello) {
    if (stopped_) {
        channel->send_and_close(FrameType::refuse, {{"reason", fmt::format("module \"{}\" is stopping on node \"{}\"",
                                                                           setup_.module, setup_.local)}});
        return;
    }
    const std::string where = channel->remote();
    Status identity = check_peer_identity(channel->ssl(), setup_.peer, where);
    if (!identity) {
        const std::string reason = fmt::format("module \"{}\": {}", setup_.module, identity.error().message);
        refused(reason);
        channel->send_and_close(FrameType::refuse, {{"reason", reason}});
        return;
    }
    if (connects()) {
        const std::string reason =
            fmt::format("module \"{}\": node \"{}\" connected, but \"{}\" sorts lower and is the one that connects",
                        setup_.module, setup_.peer, setup_.local);
        refused(reason);
        channel->send_and_close(FrameType::refuse, {{"reason", reason}});
        return;
    }
    Status checked = check_hello(hello);
    if (!checked) {
        refused(checked.error().message);
        // Our HELLO lets the peer work out the differing keys itself.
        channel->send_and_close(checked.error().is(errc::peer_mismatch) ? FrameType::hello : FrameType::refuse,
                                checked.error().is(errc::peer_mismatch)
                                    ? this->hello()
                                    : nlohmann::json{{"reason", checked.error().message}});
        return;
    }
    channel->send(FrameType::hello, this->hello());
    establish(std::move(channel));
}

asio::awaitable<Status> ModulePeerImpl::connect_once(const PeerSetup::Route& route, std::shared_ptr<Channel>& out,
                                                     bool& was_refused) {
    auto self = shared_from_this();
    const Ms deadline = hub_->options.handshake_timeout;
    const std::string where = fmt::format("{}:{}", route.remote.address().to_string(), route.remote.port());
    auto channel = std::make_shared<Channel>(asio::ip::tcp::socket(hub_->executor), *hub_->tls, where);
    out = channel;
    connecting_ = channel;
    Status st = co_await channel->connect(asio::ip::tcp::endpoint(route.local.address(), 0), route.remote, deadline);
    if (!st || stopped_) co_return st;
    st = co_await channel->handshake(asio::ssl::stream_base::client, deadline);
    if (stopped_) co_return st;
    if (!st) {
        if (SSL_get_verify_result(channel->ssl()) != X509_V_OK) was_refused = true;
        co_return Error(st.error().code,
                        fmt::format("module \"{}\": TLS handshake with node \"{}\" at {} failed: {}", setup_.module,
                                    setup_.peer, where,
                                    SSL_get_verify_result(channel->ssl()) != X509_V_OK
                                        ? describe_handshake_failure({}, channel->ssl())
                                        : st.error().message));
    }
    if (Status identity = check_peer_identity(channel->ssl(), setup_.peer, where); !identity) {
        was_refused = true;
        co_return Error(errc::peer_mismatch, fmt::format("module \"{}\": {}", setup_.module, identity.error().message));
    }
    channel->send(FrameType::hello, hello());
    auto reply = co_await channel->read_frame(deadline);
    if (stopped_) co_return Status{};
    if (!reply) {
        // TLS 1.3 clients finish their handshake before the server checks their certificate:
        // a rejected certificate shows up as an alert on the first read.
        const std::string message = reply.error().message;
        if (message.find("alert") != std::string::npos) {
            was_refused = true;
            co_return Error(errc::peer_mismatch,
                            fmt::format("module \"{}\": node \"{}\" at {} rejected this node's certificate ({})",
                                        setup_.module, setup_.peer, where, message));
        }
        co_return Error(reply.error().code, fmt::format("module \"{}\": no HELLO from node \"{}\": {}", setup_.module,
                                                        setup_.peer, message));
    }
    if (reply->type == FrameType::refuse) {
        was_refused = true;
        co_return Error(errc::peer_mismatch,
                        fmt::format("module \"{}\": node \"{}\" refused to pair: {}", setup_.module, setup_.peer,
                                    reply->payload.value("reason", std::string("no reason given"))));
    }
    if (reply->type != FrameType::hello) {
        co_return Error(errc::protocol_error, fmt::format("module \"{}\": node \"{}\" answered HELLO with {}",
                                                          setup_.module, setup_.peer, to_string(reply->type)));
    }
    if (Status checked = check_hello(reply->payload); !checked) {
        was_refused = true;
        co_return checked;
    }
    co_return Status{};
}

// Tries the routes in turn (the nodes' addresses first); backs off once every route failed.
// After a channel closes, it starts again from the first route.
asio::awaitable<void> ModulePeerImpl::connect_loop() {
    auto self = shared_from_this();
    Ms backoff = hub_->options.reconnect_min;
    std::size_t route = 0;
    while (!stopped_) {
        std::shared_ptr<Channel> channel;
        bool was_refused = false;
        const PeerSetup::Route& way = setup_.routes[route];
        Status st = co_await connect_once(way, channel, was_refused);
        connecting_.reset();
        if (stopped_) break;
        Ms wait = backoff;
        if (st) {
            if (route != 0) {
                spdlog::info("module \"{}\": control channel to node \"{}\" goes through \"{}\" ({})", setup_.module,
                             setup_.peer, way.name, way.remote.address().to_string());
            }
            establish(channel);
            co_await channel->wait_closed();
            if (stopped_) break;
            backoff = hub_->options.reconnect_min;
            wait = backoff;
            route = 0;
        } else {
            channel->close();
            if (was_refused) {
                refused(st.error().message);
                wait = hub_->options.refused_retry;
                route = 0;
            } else {
                if (st.error().message != channel_reason_) spdlog::debug("{}", st.error().message);
                channel_reason_ = st.error().message;
                route = (route + 1) % setup_.routes.size();
                if (route != 0) continue;  // the next route at once
                backoff = std::min(backoff * 2, hub_->options.reconnect_max);
            }
        }
        reconnect_.expires_after(wait);
        error_code ec;
        co_await reconnect_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
}

asio::awaitable<void> ModulePeerImpl::read_loop(std::shared_ptr<Channel> channel) {
    auto self = shared_from_this();
    const Ms idle = std::max(setup_.timeout, 2 * setup_.interval);
    while (!stopped_ && channel_ == channel) {
        auto frame = co_await channel->read_frame(idle);
        if (stopped_ || channel_ != channel) break;
        if (!frame) {
            channel_down(channel, frame.error().message);
            break;
        }
        if (frame->type != FrameType::message && frame->type != FrameType::ping) {
            channel_down(channel, fmt::format("protocol error: unexpected {} frame from {}", to_string(frame->type),
                                              channel->remote()));
            break;
        }
        if (frame->type == FrameType::message && events_.on_message) events_.on_message(frame->payload);
    }
}

asio::awaitable<void> ModulePeerImpl::path_loop(std::size_t index) {
    auto self = shared_from_this();
    Path& path = *paths_[index];
    std::array<std::uint8_t, max_heartbeat_size + 1> buffer{};
    while (!stopped_) {
        if (!path.bound) {
            error_code ec;
            path.socket = std::make_unique<asio::ip::udp::socket>(hub_->executor);
            path.socket->open(path.config.local.protocol(), ec);
            if (!ec) path.socket->bind(path.config.local, ec);
            if (ec) {
                const std::string error = fmt::format("cannot bind heartbeat path \"{}\" to {}:{}: {}", path.config.name,
                                                      path.config.local.address().to_string(), path.config.local.port(),
                                                      ec.message());
                if (error != path.error) spdlog::warn("module \"{}\": {}", setup_.module, error);
                path.error = error;
                path.socket.reset();
                path.retry.expires_after(hub_->options.rebind_interval);
                co_await path.retry.async_wait(asio::redirect_error(asio::use_awaitable, ec));
                continue;
            }
            if (!path.error.empty()) spdlog::info("module \"{}\": heartbeat path \"{}\" is bound now", setup_.module, path.config.name);
            path.bound = true;
            path.error.clear();
        }
        asio::ip::udp::endpoint sender;
        error_code ec;
        const std::size_t n = co_await path.socket->async_receive_from(
            asio::buffer(buffer), sender, asio::redirect_error(asio::use_awaitable, ec));
        if (stopped_) break;
        if (ec) {
            if (ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor) break;
            continue;  // e.g. an ICMP error from an earlier send
        }
        Status ok = rx_key_ ? open_heartbeat(std::span(buffer.data(), n), *rx_key_, setup_.module, setup_.peer,
                                             path.config.name, path.rx_last)
                            : Status(Error(errc::peer_mismatch,
                                           "no heartbeat key yet: the peer has not paired over TLS since this start"));
        if (!ok) {
            ++path.rejected;
            path.last_rejection = fmt::format("from {}: {}", sender.address().to_string(), ok.error().message);
            spdlog::debug("module \"{}\": heartbeat on path \"{}\" dropped: {}", setup_.module, path.config.name,
                          path.last_rejection);
            continue;
        }
        ++path.accepted;
        path.heard = Clock::now();
        evaluate_liveness(*path.heard);
    }
}

void ModulePeerImpl::send_heartbeats() {
    if (!tx_key_) return;
    for (auto& path : paths_) {
        if (!path->bound) continue;
        auto packet = std::make_shared<std::vector<std::uint8_t>>(seal_heartbeat(
            HeartbeatFields{tx_key_->session, ++path->tx_sequence, setup_.module, setup_.local, path->config.name},
            *tx_key_));
        path->socket->async_send_to(asio::buffer(*packet), path->config.remote,
                                    [packet](const error_code&, std::size_t) {});
    }
}

asio::awaitable<void> ModulePeerImpl::tick_loop() {
    auto self = shared_from_this();
    while (!stopped_) {
        send_heartbeats();
        if (channel_) channel_->send(FrameType::ping, nlohmann::json::object());
        evaluate_liveness(Clock::now());
        if (stopped_) break;
        tick_.expires_after(setup_.interval);
        error_code ec;
        co_await tick_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
}

void ModulePeerImpl::evaluate_liveness(Clock::time_point now) {
    std::vector<std::string> heard;
    std::vector<std::string> silent;
    const auto fresh = [&](const std::optional<Clock::time_point>& t) { return t && now - *t < setup_.timeout; };
    for (const auto& path : paths_) (fresh(path->heard) ? heard : silent).push_back(path->config.name);
    Liveness next = liveness_;
    std::string reason;
    if (!heard.empty()) {
        next = Liveness::alive;
        reason = fmt::format("peer {} alive: heard on {}", setup_.peer, fmt::join(heard, ", "));
    } else if (liveness_ != Liveness::unknown) {
        next = Liveness::lost;
        reason = fmt::format("peer {} lost: silent on {} for {}", setup_.peer, fmt::join(silent, ", "),
                             format_ms(setup_.timeout));
    }
    if (next == liveness_) return;
    liveness_ = next;
    liveness_reason_ = reason;
    if (next == Liveness::lost) {
        spdlog::warn("module \"{}\": {}", setup_.module, reason);
    } else {
        spdlog::info("module \"{}\": {}", setup_.module, reason);
    }
    if (events_.on_liveness) events_.on_liveness(next, reason);
}

}  // namespace vmha::peer::detail
