// The ModulePeer implementation: one module's control channel, heartbeat paths and liveness.
// Owned by the hub's executor; the coroutines it runs hold a shared_ptr to it and re-check
// `stopped_` after every co_await.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <vmha/peer/fingerprint.h>
#include <vmha/peer/peer.h>

#include "asio.h"
#include "channel.h"
#include "heartbeat_packet.h"
#include "hub_state.h"

namespace vmha::peer::detail {

using Clock = std::chrono::steady_clock;

struct PeerSetup {
    std::string module;
    std::string local;  // this node's name
    std::string peer;   // the peer node's name
    // The ways to the peer's control port: first the nodes' addresses, then each heartbeat
    // path's (where they differ), so that the channel survives the loss of one network. The
    // connecting side tries them in turn; both sides listen on every local one.
    struct Route {
        std::string name;                 // "address" or the heartbeat path's name
        asio::ip::tcp::endpoint local;    // where we listen (and bind outgoing connections)
        asio::ip::tcp::endpoint remote;   // where the peer listens
    };
    std::vector<Route> routes;  // never empty
    Ms interval{500};
    Ms timeout{3000};
    struct Path {
        std::string name;
        asio::ip::udp::endpoint local;
        asio::ip::udp::endpoint remote;
    };
    std::vector<Path> paths;
    Fingerprint fingerprint;
};

class ModulePeerImpl : public std::enable_shared_from_this<ModulePeerImpl> {
public:
    ModulePeerImpl(std::shared_ptr<PeerHub::State> hub, PeerSetup setup, PeerEvents events);

    void start();
    void stop();
    bool send(nlohmann::json message);
    PeerStatus status() const;
    const std::string& module() const { return setup_.module; }

    // The hub accepted a connection whose HELLO names this module.
    void adopt(std::shared_ptr<Channel> channel, const nlohmann::json& hello);

private:
    struct Path {
        Path(PeerSetup::Path c, const asio::any_io_executor& executor) : config(std::move(c)), retry(executor) {}
        PeerSetup::Path config;
        std::unique_ptr<asio::ip::udp::socket> socket;
        asio::steady_timer retry;  // before rebinding
        bool bound = false;
        std::string error;
        std::uint64_t tx_sequence = 0;
        std::uint64_t rx_last = 0;
        std::optional<Clock::time_point> heard;
        std::uint64_t accepted = 0;
        std::uint64_t rejected = 0;
        std::string last_rejection;
    };

    bool connects() const { return setup_.local < setup_.peer; }
    nlohmann::json hello() const;
    // Checks the peer's HELLO: identity, module, version, then the fingerprint. On a refusal
    // the error is the whole sentence reported to the module.
    Status check_hello(const nlohmann::json& hello) const;
    void refused(const std::string& reason);
    void establish(std::shared_ptr<Channel> channel);
    void channel_down(const std::shared_ptr<Channel>& channel, const std::string& reason);
    void evaluate_liveness(Clock::time_point now);
    void send_heartbeats();

    asio::awaitable<void> connect_loop();
    asio::awaitable<Status> connect_once(const PeerSetup::Route& route, std::shared_ptr<Channel>& out,
                                         bool& was_refused);
    asio::awaitable<void> read_loop(std::shared_ptr<Channel> channel);
    asio::awaitable<void> path_loop(std::size_t index);
    asio::awaitable<void> tick_loop();

    std::shared_ptr<PeerHub::State> hub_;
    PeerSetup setup_;
    PeerEvents events_;
    bool started_ = false;
    bool stopped_ = false;

    std::shared_ptr<Channel> channel_;  // the paired channel, or null
    std::shared_ptr<Channel> connecting_;  // the connector's attempt in progress, or null
    std::string channel_reason_ = "not connected yet";
    std::string refused_;
    asio::steady_timer reconnect_;
    asio::steady_timer tick_;

    std::optional<HeartbeatKey> tx_key_;  // ours, from the last paired TLS session
    std::optional<HeartbeatKey> rx_key_;  // the peer's
    std::vector<std::unique_ptr<Path>> paths_;
    Liveness liveness_ = Liveness::unknown;
    std::string liveness_reason_;
};

}  // namespace vmha::peer::detail
