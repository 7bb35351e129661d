// The vmha-witness protocol's messages (pure: no I/O; shared by the client backend and the
// daemon). docs/witness.md describes the protocol.
//
// Transport: TLS 1.3 with certificates on both sides, signed by the cluster CA; frames are
// the control channel's (docs/vmha-peer-protocol.md: 12-byte header "VMHP", version, type,
// reserved flags, checked length; a JSON object as payload). After the handshake:
//   client -> HELLO {protocol: "vmha-witness", version: 1, node}
//   witness -> HELLO {protocol: "vmha-witness", version: 1, witness}  or  REFUSE {reason}
//   client -> MESSAGE request {id, op, pair, module, ttl_ms}   (any number, pipelined)
//   witness -> MESSAGE reply {id, ok: true, holder, remaining_ms, ttl_ms, epoch}
//                         or {id, ok: false, error: "<errc name>", message}
// Replies come in request order. PING frames are allowed both ways and ignored.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include <vmha/error.h>
#include <vmha/lease/lease.h>

namespace vmha::lease::wire {

inline constexpr std::string_view protocol_name = "vmha-witness";
inline constexpr int protocol_version = 1;
inline constexpr Duration min_ttl{100};
inline constexpr Duration max_ttl{600'000};

enum class Op { acquire, renew, release, query };
std::string_view to_string(Op);

struct Request {
    std::uint64_t id = 0;
    Op op = Op::query;
    LeaseKey key;
    Duration ttl{0};  // acquire and renew only
};

struct Reply {
    std::uint64_t id = 0;
    Result<LeaseState> result = LeaseState{};
};

// A node, witness or module name: 1 to 64 of [A-Za-z0-9._-].
bool valid_name(std::string_view name);
// "a+b" with a < b, both valid names.
bool valid_pair(std::string_view pair);
// The pair's two nodes; call only on a valid pair.
std::pair<std::string, std::string> pair_nodes(std::string_view pair);

// The HELLO payload; role_key is "node" (client) or "witness".
nlohmann::json hello(std::string_view role_key, std::string_view name);
// Checks protocol and version; answers the name under `role_key`.
Result<std::string> parse_hello(const nlohmann::json& payload, std::string_view role_key);

nlohmann::json encode(const Request& request);
Result<Request> parse_request(const nlohmann::json& payload);
nlohmann::json encode(const Reply& reply);
Result<Reply> parse_reply(const nlohmann::json& payload);

// The errc named by errc_name(), or nullopt.
std::optional<errc> errc_from_name(std::string_view name);

}  // namespace vmha::lease::wire
