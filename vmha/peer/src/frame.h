// Control-channel frames (pure: no I/O; fuzzable).
//
// A frame is a 12-byte big-endian header and a JSON payload:
//   u32 magic "VMHP" | u8 version (1) | u8 type | u16 flags (0) | u32 payload length
// The header is checked completely before the payload is read or allocated.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <vmha/error.h>

namespace vmha::peer::detail {

inline constexpr std::uint32_t frame_magic = 0x564D4850;  // "VMHP"
inline constexpr std::uint8_t protocol_version = 1;
inline constexpr std::size_t frame_header_size = 12;
inline constexpr std::uint32_t max_frame_payload = 1u << 20;

enum class FrameType : std::uint8_t {
    hello = 1,    // {version, node, module, fingerprint}: first frame in each direction
    refuse = 2,   // {reason}: the sender will not pair; it closes the connection
    message = 3,  // an opaque JSON object for the module runner
    ping = 4,     // {}: keeps the channel's read deadline from expiring
};
std::string_view to_string(FrameType);

struct FrameHeader {
    FrameType type = FrameType::ping;
    std::uint32_t length = 0;
};

struct Frame {
    FrameType type = FrameType::ping;
    nlohmann::json payload;  // always an object
};

std::vector<std::uint8_t> encode_frame(FrameType type, const nlohmann::json& payload);

// Checks magic, version, flags, type and the length limit.
Result<FrameHeader> decode_frame_header(std::span<const std::uint8_t> header);

// Parses a payload: it must be a JSON object.
Result<nlohmann::json> decode_frame_payload(FrameType type, std::span<const std::uint8_t> payload);

}  // namespace vmha::peer::detail
