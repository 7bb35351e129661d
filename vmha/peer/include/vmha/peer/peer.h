// The channel between the two vmhad of a module: mutual-TLS control channel + UDP heartbeats.
//
// One PeerHub per vmhad, created from the node file: it owns the TLS context (cluster CA,
// this node's certificate and key, checked at creation) and one TCP listener per distinct
// local address:control_port, shared by all modules. Each module attaches once and gets a
// ModulePeer:
//   - control channel: of the module's two nodes, the one whose name sorts lower connects,
//     the other accepts. Both present certificates signed by the cluster CA; the peer's must
//     name the module's peer node. Both sides then exchange HELLO (version, node, module,
//     config fingerprint) and refuse to pair when the module files differ. Messages are
//     opaque JSON objects, delivered in order. Reconnects with backoff.
//   - heartbeats: one UDP socket per heartbeat path, HMAC-SHA256 with keys exported from the
//     last successful TLS session, per-path strictly increasing sequence numbers.
//   - liveness, from heartbeats only: unknown until the first valid heartbeat; alive while any
//     path delivered a valid heartbeat within heartbeat.timeout; lost when every path has been
//     silent that long. The control channel's state is reported apart (on_channel).
// docs/vmha-peer-protocol.md describes the wire formats and rules.
//
// Threading: the hub, every ModulePeer and every callback run on the one executor passed to
// create() (vmhad's io_context thread). No method may be called from another thread.
// Callbacks are never called after stop() or destruction. The hub must outlive its
// ModulePeers.
#pragma once

#include <utility>  // Boost 1.74's Asio headers need it first under GCC 12

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <nlohmann/json.hpp>

#include <vmha/config/config.h>
#include <vmha/error.h>

namespace vmha::peer {

enum class Liveness {
    unknown,  // no valid heartbeat since start (none can be verified before a TLS pairing)
    alive,    // a valid heartbeat arrived on some path within heartbeat.timeout
    lost,     // every heartbeat path has been silent for heartbeat.timeout
};
std::string_view to_string(Liveness);

struct PathStatus {
    std::string name;            // heartbeat path name
    bool bound = false;          // our UDP socket is open
    std::string error;           // why it is not bound, e.g. the bind error
    std::optional<std::chrono::milliseconds> since_heard;  // age of the last valid packet
    std::uint64_t accepted = 0;  // valid packets received
    std::uint64_t rejected = 0;  // forged, replayed or malformed packets dropped
    std::string last_rejection;  // reason of the last rejected packet
};

struct PeerStatus {
    std::string module;
    std::string peer_node;
    bool channel_up = false;     // paired: TLS up and HELLO accepted on both sides
    std::string channel_reason;  // why it is up or down, e.g. the last connect error
    std::string refused;         // the last pairing refusal, empty when none
    Liveness liveness = Liveness::unknown;
    std::string liveness_reason;
    std::vector<PathStatus> paths;  // heartbeat paths in config order
};

struct PeerEvents {
    // The paired control channel came up or went down.
    std::function<void(bool up, const std::string& reason)> on_channel;
    // A message from the peer's module (a JSON object), in the order it was sent.
    std::function<void(const nlohmann::json& message)> on_message;
    // Liveness changed, e.g. (lost, "peer hv2 lost: silent on lan, replication-net for 3s").
    std::function<void(Liveness liveness, const std::string& reason)> on_liveness;
    // Pairing was refused (identity, TLS verification, different config); retries go on slowly.
    std::function<void(const std::string& reason)> on_refused;
};

// One module's link to its peer. Abstract so that the module runner can use a fake.
class ModulePeer {
public:
    virtual ~ModulePeer() = default;
    virtual void start() = 0;  // open heartbeat sockets, connect or wait for the peer
    virtual void stop() = 0;   // close everything; no callback afterwards
    // Queues a message for the peer; false (message dropped) when the channel is not up.
    virtual bool send(nlohmann::json message) = 0;
    virtual PeerStatus status() const = 0;
};

struct HubOptions {
    std::chrono::milliseconds handshake_timeout{5000};  // TCP connect, TLS handshake, HELLO
    std::chrono::milliseconds reconnect_min{250};       // backoff after a failed connect...
    std::chrono::milliseconds reconnect_max{5000};      // ...doubling up to this
    std::chrono::milliseconds refused_retry{30000};     // after a refused pairing
    std::chrono::milliseconds rebind_interval{1000};    // retry a heartbeat socket that failed to bind
};

class PeerHub {
public:
    // Loads and checks the node's TLS files: each readable, the key matching the certificate,
    // the certificate signed by the CA and naming the node. Errors name the file.
    static Result<std::unique_ptr<PeerHub>> create(boost::asio::any_io_executor executor,
                                                   const config::Node& node,
                                                   HubOptions options = {});
    ~PeerHub();
    PeerHub(const PeerHub&) = delete;
    PeerHub& operator=(const PeerHub&) = delete;

    // Registers a module (its parsed config and the file's text, for the fingerprint) and
    // opens the control listener on this node's address:control_port if not yet open.
    // Addresses in the module must be IP literals. Call start() on the result.
    Result<std::unique_ptr<ModulePeer>> attach(const config::Module& module,
                                               const std::string& module_yaml_text,
                                               PeerEvents events);

    struct State;

private:
    explicit PeerHub(std::shared_ptr<State> state);
    std::shared_ptr<State> state_;
};

}  // namespace vmha::peer
