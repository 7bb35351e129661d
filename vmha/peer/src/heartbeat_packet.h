// Heartbeat packets (pure: no I/O; fuzzable).
//
// One UDP datagram, big-endian:
//   u32 magic "VMHB" | u8 version (1) | u8 flags (0) | u16 reserved (0)
//   u64 session | u64 sequence
//   u8 len, module | u8 len, sender node | u8 len, path name
//   32 bytes HMAC-SHA256 over everything before it
// The key and the session id are exported from the TLS session of the last pairing, one pair
// per sending node (see tls.h). The receiver accepts a packet only when the session is the
// current one, the names are the expected ones, the HMAC verifies and the sequence is
// greater than the last one accepted on that path.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <vmha/error.h>

namespace vmha::peer::detail {

inline constexpr std::uint32_t heartbeat_magic = 0x564D4842;  // "VMHB"
inline constexpr std::uint8_t heartbeat_version = 1;
inline constexpr std::size_t heartbeat_mac_size = 32;
inline constexpr std::size_t max_heartbeat_size = 24 + 3 * 256 + heartbeat_mac_size;

struct HeartbeatKey {
    std::array<std::uint8_t, 32> key{};
    std::uint64_t session = 0;
};

struct HeartbeatFields {
    std::uint64_t session = 0;
    std::uint64_t sequence = 0;
    std::string module;
    std::string sender;
    std::string path;
};

// Builds a packet. Names are at most 255 bytes (config names are far shorter).
std::vector<std::uint8_t> seal_heartbeat(const HeartbeatFields& fields, const HeartbeatKey& key);

// Checks a received packet against what this receiver expects (session taken from `key`) and
// the last accepted sequence on this path; on success updates `last_sequence`. The error says
// why the packet was dropped ("replayed sequence 7 (last accepted 9)", "bad HMAC", ...).
Status open_heartbeat(std::span<const std::uint8_t> packet, const HeartbeatKey& key,
                      const std::string& module, const std::string& sender, const std::string& path,
                      std::uint64_t& last_sequence);

}  // namespace vmha::peer::detail
