#include "frame.h"

#include <fmt/format.h>

namespace vmha::peer::detail {

namespace {

void put_u32(std::vector<std::uint8_t>& out, std::uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(v >> shift));
}

std::uint32_t get_u32(std::span<const std::uint8_t> in, std::size_t at) {
    return static_cast<std::uint32_t>(in[at]) << 24 | static_cast<std::uint32_t>(in[at + 1]) << 16 |
           static_cast<std::uint32_t>(in[at + 2]) << 8 | static_cast<std::uint32_t>(in[at + 3]);
}

}  // namespace

std::string_view to_string(FrameType type) {
    switch (type) {
        case FrameType::hello: return "HELLO";
        case FrameType::refuse: return "REFUSE";
        case FrameType::message: return "MESSAGE";
        case FrameType::ping: return "PING";
    }
    return "unknown";
}

std::vector<std::uint8_t> encode_frame(FrameType type, const nlohmann::json& payload) {
    const std::string body = payload.dump();
    if (body.size() > max_frame_payload) {
        internal_error(fmt::format("a {} frame of {} bytes is over the limit of {}", to_string(type),
                                   body.size(), max_frame_payload));
    }
    std::vector<std::uint8_t> out;
    out.reserve(frame_header_size + body.size());
    put_u32(out, frame_magic);
    out.push_back(protocol_version);
    out.push_back(static_cast<std::uint8_t>(type));
    out.push_back(0);
    out.push_back(0);
    put_u32(out, static_cast<std::uint32_t>(body.size()));
    out.insert(out.end(), body.begin(), body.end());
    return out;
}

Result<FrameHeader> decode_frame_header(std::span<const std::uint8_t> header) {
    if (header.size() != frame_header_size) {
        return Error(errc::protocol_error,
                     fmt::format("a frame header is {} bytes, not {}", frame_header_size, header.size()));
    }
    const std::uint32_t magic = get_u32(header, 0);
    if (magic != frame_magic) {
        return Error(errc::protocol_error, fmt::format("bad frame magic 0x{:08x}", magic));
    }
    if (header[4] != protocol_version) {
        return Error(errc::version_mismatch,
                     fmt::format("peer protocol version {} is not supported (this node speaks {})",
                                 header[4], protocol_version));
    }
    const std::uint8_t type = header[5];
    if (type < static_cast<std::uint8_t>(FrameType::hello) || type > static_cast<std::uint8_t>(FrameType::ping)) {
        return Error(errc::protocol_error, fmt::format("unknown frame type {}", type));
    }
    if (header[6] != 0 || header[7] != 0) {
        return Error(errc::protocol_error,
                     fmt::format("reserved frame flags 0x{:02x}{:02x} are not zero", header[6], header[7]));
    }
    FrameHeader out{static_cast<FrameType>(type), get_u32(header, 8)};
    if (out.length > max_frame_payload) {
        return Error(errc::protocol_error, fmt::format("{} payload of {} bytes is over the limit of {}",
                                                       to_string(out.type), out.length, max_frame_payload));
    }
    return out;
}

Result<nlohmann::json> decode_frame_payload(FrameType type, std::span<const std::uint8_t> payload) {
    auto json = nlohmann::json::parse(payload.begin(), payload.end(), nullptr, false);
    if (json.is_discarded() || !json.is_object()) {
        return Error(errc::protocol_error,
                     fmt::format("{} payload of {} bytes is not a JSON object", to_string(type), payload.size()));
    }
    return json;
}

}  // namespace vmha::peer::detail
