#include "nbd_codec.h"

#include <algorithm>
#include <array>

#include <fmt/format.h>

#include "nbd_protocol.h"

namespace imagesync::nbd {

namespace {

template <typename T>
std::array<std::byte, sizeof(T)> big_endian(T v) {
    std::array<std::byte, sizeof(T)> b;
    for (std::size_t i = 0; i < sizeof(T); ++i) {
        b[i] = static_cast<std::byte>(v >> (8 * (sizeof(T) - 1 - i)));
    }
    return b;
}

// Appends `v` big-endian in one insert (one capacity check instead of one per byte).
template <typename T>
void put_big_endian(Bytes& out, T v) {
    const auto b = big_endian(v);
    out.insert(out.end(), b.begin(), b.end());
}

}  // namespace

void put_u16(Bytes& out, std::uint16_t v) { put_big_endian(out, v); }
void put_u32(Bytes& out, std::uint32_t v) { put_big_endian(out, v); }
void put_u64(Bytes& out, std::uint64_t v) { put_big_endian(out, v); }
void set_u32(Bytes& out, std::size_t at, std::uint32_t v) {
    const auto b = big_endian(v);
    std::copy(b.begin(), b.end(), out.begin() + static_cast<std::ptrdiff_t>(at));
}
void put_string(Bytes& out, std::string_view s) {
    for (const char c : s) out.push_back(static_cast<std::byte>(c));
}
std::uint16_t get_u16(ByteView in, std::size_t at) {
    return static_cast<std::uint16_t>((std::to_integer<unsigned>(in[at]) << 8) |
                                      std::to_integer<unsigned>(in[at + 1]));
}
std::uint32_t get_u32(ByteView in, std::size_t at) {
    return (static_cast<std::uint32_t>(get_u16(in, at)) << 16) | get_u16(in, at + 2);
}
std::uint64_t get_u64(ByteView in, std::size_t at) {
    return (static_cast<std::uint64_t>(get_u32(in, at)) << 32) | get_u32(in, at + 4);
}

namespace {

std::string get_string(ByteView in, std::size_t at, std::size_t length) {
    std::string s(length, '\0');
    for (std::size_t i = 0; i < length; ++i) s[i] = static_cast<char>(in[at + i]);
    return s;
}

vmha::Error protocol(std::string message) {
    return {vmha::errc::protocol_error, std::move(message)};
}
vmha::Error invalid(std::string message) {
    return {vmha::errc::invalid_argument, std::move(message)};
}

// Reads "u32 length, string" at `at`, checking bounds and the 4096-byte string limit.
vmha::Result<std::string> get_length_prefixed(ByteView in, std::size_t& at, std::string_view what) {
    if (in.size() - at < 4) {
        return invalid(fmt::format("the {} length is cut off at byte {}", what, at));
    }
    const std::uint32_t length = get_u32(in, at);
    at += 4;
    if (length > kMaxStringLength) {
        return invalid(fmt::format("the {} is {} bytes long, more than the limit of {}", what,
                                   length, kMaxStringLength));
    }
    if (in.size() - at < length) {
        return invalid(
            fmt::format("the {} claims {} bytes but only {} remain", what, length, in.size() - at));
    }
    std::string s = get_string(in, at, length);
    at += length;
    return s;
}

}  // namespace

Bytes encode_greeting() {
    Bytes out;
    out.reserve(kGreetingSize);
    put_u64(out, kNbdMagic);
    put_u64(out, kOptionMagic);
    put_u16(out, kFlagFixedNewstyle | kFlagNoZeroes);
    return out;
}

vmha::Result<ClientFlags> parse_client_flags(ByteView in) {
    if (in.size() != 4) return protocol(fmt::format("client flags are {} bytes, not 4", in.size()));
    const std::uint32_t flags = get_u32(in, 0);
    if ((flags & ~(kClientFlagFixedNewstyle | kClientFlagNoZeroes)) != 0) {
        return protocol(fmt::format("client flags {:#x} have unknown bits set", flags));
    }
    if ((flags & kClientFlagFixedNewstyle) == 0) {
        return protocol(fmt::format(
            "client flags {:#x} lack FIXED_NEWSTYLE; only fixed newstyle is served", flags));
    }
    return ClientFlags{.no_zeroes = (flags & kClientFlagNoZeroes) != 0};
}

vmha::Result<OptionHeader> parse_option_header(ByteView in) {
    if (in.size() != kOptionHeaderSize) {
        return protocol(fmt::format("option header is {} bytes, not 16", in.size()));
    }
    const std::uint64_t magic = get_u64(in, 0);
    if (magic != kOptionMagic) {
        return protocol(fmt::format("option magic is {:#018x}, not IHAVEOPT", magic));
    }
    return OptionHeader{.option = get_u32(in, 8), .length = get_u32(in, 12)};
}

vmha::Result<InfoRequest> parse_info_request(ByteView data) {
    std::size_t at = 0;
    auto name = get_length_prefixed(data, at, "export name");
    if (!name) return std::move(name).error();
    if (data.size() - at < 2) return invalid("the number of information requests is cut off");
    const std::uint16_t count = get_u16(data, at);
    at += 2;
    if (data.size() - at != std::size_t{count} * 2) {
        return invalid(fmt::format("{} information requests need {} bytes but {} remain", count,
                                   std::size_t{count} * 2, data.size() - at));
    }
    InfoRequest r{.export_name = std::move(*name), .info_types = {}};
    r.info_types.reserve(count);
    for (std::uint16_t i = 0; i < count; ++i) {
        r.info_types.push_back(get_u16(data, at));
        at += 2;
    }
    return r;
}

vmha::Result<MetaContextRequest> parse_meta_context_request(ByteView data) {
    std::size_t at = 0;
    auto name = get_length_prefixed(data, at, "export name");
    if (!name) return std::move(name).error();
    if (data.size() - at < 4) return invalid("the number of meta context queries is cut off");
    const std::uint32_t count = get_u32(data, at);
    at += 4;
    // Each query needs at least its 4-byte length: bound the count before reserving.
    if (count > (data.size() - at) / 4) {
        return invalid(
            fmt::format("{} meta context queries cannot fit in {} bytes", count, data.size() - at));
    }
    MetaContextRequest r{.export_name = std::move(*name), .queries = {}};
    r.queries.reserve(count);
    for (std::uint32_t i = 0; i < count; ++i) {
        auto q = get_length_prefixed(data, at, "meta context query");
        if (!q) return std::move(q).error();
        r.queries.push_back(std::move(*q));
    }
    if (at != data.size()) {
        return invalid(
            fmt::format("{} bytes follow the last meta context query", data.size() - at));
    }
    return r;
}

Bytes encode_option_reply(std::uint32_t option, std::uint32_t reply_type, ByteView payload) {
    Bytes out;
    out.reserve(20 + payload.size());
    put_u64(out, kOptionReplyMagic);
    put_u32(out, option);
    put_u32(out, reply_type);
    put_u32(out, static_cast<std::uint32_t>(payload.size()));
    out.insert(out.end(), payload.begin(), payload.end());
    return out;
}

Bytes encode_option_error(std::uint32_t option, std::uint32_t error_type,
                          std::string_view message) {
    Bytes payload;
    put_string(payload, message.substr(0, kMaxStringLength));
    return encode_option_reply(option, error_type, payload);
}

Bytes encode_rep_server(std::uint32_t option, std::string_view export_name) {
    Bytes payload;
    put_u32(payload, static_cast<std::uint32_t>(export_name.size()));
    put_string(payload, export_name);
    return encode_option_reply(option, kRepServer, payload);
}

Bytes encode_info_export(std::uint32_t option, std::uint64_t size, std::uint16_t flags) {
    Bytes payload;
    put_u16(payload, kInfoExport);
    put_u64(payload, size);
    put_u16(payload, flags);
    return encode_option_reply(option, kRepInfo, payload);
}

Bytes encode_info_name(std::uint32_t option, std::string_view name) {
    Bytes payload;
    put_u16(payload, kInfoName);
    put_string(payload, name);
    return encode_option_reply(option, kRepInfo, payload);
}

Bytes encode_info_block_size(std::uint32_t option, std::uint32_t minimum, std::uint32_t preferred,
                             std::uint32_t maximum) {
    Bytes payload;
    put_u16(payload, kInfoBlockSize);
    put_u32(payload, minimum);
    put_u32(payload, preferred);
    put_u32(payload, maximum);
    return encode_option_reply(option, kRepInfo, payload);
}

Bytes encode_meta_context(std::uint32_t option, std::uint32_t context_id, std::string_view name) {
    Bytes payload;
    put_u32(payload, context_id);
    put_string(payload, name);
    return encode_option_reply(option, kRepMetaContext, payload);
}

Bytes encode_export_name_reply(std::uint64_t size, std::uint16_t flags, bool no_zeroes) {
    Bytes out;
    put_u64(out, size);
    put_u16(out, flags);
    if (!no_zeroes) out.resize(out.size() + 124, std::byte{0});
    return out;
}

vmha::Result<Request> parse_request_header(ByteView in) {
    if (in.size() != kRequestHeaderSize) {
        return protocol(fmt::format("request header is {} bytes, not 28", in.size()));
    }
    const std::uint32_t magic = get_u32(in, 0);
    if (magic != kRequestMagic) {
        return protocol(
            fmt::format("request magic is {:#010x}, not {:#010x}", magic, kRequestMagic));
    }
    return Request{.flags = get_u16(in, 4),
                   .type = get_u16(in, 6),
                   .cookie = get_u64(in, 8),
                   .offset = get_u64(in, 16),
                   .length = get_u32(in, 24)};
}

Bytes encode_request_header(const Request& r) {
    Bytes out;
    out.reserve(kRequestHeaderSize);
    put_u32(out, kRequestMagic);
    put_u16(out, r.flags);
    put_u16(out, r.type);
    put_u64(out, r.cookie);
    put_u64(out, r.offset);
    put_u32(out, r.length);
    return out;
}

std::string_view command_name(std::uint16_t type) {
    switch (type) {
        case kCmdRead:
            return "READ";
        case kCmdWrite:
            return "WRITE";
        case kCmdDisc:
            return "DISC";
        case kCmdFlush:
            return "FLUSH";
        case kCmdTrim:
            return "TRIM";
        case kCmdCache:
            return "CACHE";
        case kCmdWriteZeroes:
            return "WRITE_ZEROES";
        case kCmdBlockStatus:
            return "BLOCK_STATUS";
        default:
            return "UNKNOWN";
    }
}

vmha::Status check_payload_length(const Request& r) {
    if (r.type == kCmdWrite && r.length > kMaxPayload) {
        return protocol(
            fmt::format("WRITE of {} bytes at offset {} exceeds the maximum payload "
                        "of {} bytes",
                        r.length, r.offset, kMaxPayload));
    }
    return {};
}

vmha::Status check_request(const Request& r, const RequestContext& ctx) {
    const std::uint16_t tf = ctx.transmission_flags;
    const bool read_only = (tf & kFlagReadOnly) != 0;
    const std::string_view name = command_name(r.type);
    const bool is_write = r.type == kCmdWrite || r.type == kCmdTrim || r.type == kCmdWriteZeroes;
    if (is_write && read_only) {
        return vmha::Error(vmha::errc::read_only,
                           fmt::format("{} refused: the export is read-only", name));
    }

    // Which command flags each command accepts, given what was advertised.
    std::uint16_t allowed = 0;
    if ((tf & kFlagSendFua) != 0) allowed |= kCmdFlagFua;
    switch (r.type) {
        case kCmdRead:
            if (ctx.structured_replies && (tf & kFlagSendDf) != 0) allowed |= kCmdFlagDf;
            break;
        case kCmdWrite:
        case kCmdDisc:
        case kCmdFlush:
        case kCmdCache:
            break;
        case kCmdTrim:
            if ((tf & kFlagSendTrim) == 0) {
                return invalid("TRIM was not advertised for this export");
            }
            break;
        case kCmdWriteZeroes:
            if ((tf & kFlagSendWriteZeroes) == 0) {
                return invalid("WRITE_ZEROES was not advertised for this export");
            }
            allowed |= kCmdFlagNoHole;
            if ((tf & kFlagSendFastZero) != 0) allowed |= kCmdFlagFastZero;
            break;
        case kCmdBlockStatus:
            if (!ctx.base_allocation) {
                return invalid("BLOCK_STATUS needs a negotiated meta context, and none was");
            }
            allowed |= kCmdFlagReqOne;
            break;
        default:
            return invalid(fmt::format("command type {} is unknown", r.type));
    }
    if (r.type == kCmdCache && (tf & kFlagSendCache) == 0) {
        return invalid("CACHE was not advertised for this export");
    }
    if ((r.flags & ~allowed) != 0) {
        return invalid(
            fmt::format("{} has flags {:#x}, of which {:#x} are unknown or not "
                        "negotiated",
                        name, r.flags, r.flags & ~allowed));
    }

    if (r.type == kCmdDisc) return {};
    if (r.type == kCmdFlush) {
        if (r.offset != 0 || r.length != 0) {
            return invalid(fmt::format("FLUSH must have offset and length 0, not {} and {}",
                                       r.offset, r.length));
        }
        return {};
    }
    if (r.length == 0) {
        return invalid(fmt::format("{} at offset {} has length 0", name, r.offset));
    }
    if (r.type == kCmdRead && r.length > kMaxPayload) {
        return invalid(fmt::format("READ of {} bytes exceeds the maximum payload of {} bytes",
                                   r.length, kMaxPayload));
    }
    const bool beyond = r.offset > ctx.export_size || r.length > ctx.export_size - r.offset;
    if (beyond) {
        // proto.md: writes beyond the end are ENOSPC; reads, trims and the rest EINVAL.
        const bool enospc = r.type == kCmdWrite || r.type == kCmdWriteZeroes;
        return vmha::Error(enospc ? vmha::errc::no_space : vmha::errc::invalid_argument,
                           fmt::format("{} of {} bytes at offset {} goes beyond the export size "
                                       "of {} bytes",
                                       name, r.length, r.offset, ctx.export_size));
    }
    return {};
}

std::uint32_t nbd_error_from(vmha::errc e) {
    switch (e) {
        case vmha::errc::read_only:
        case vmha::errc::permission_denied:
            return kEperm;
        case vmha::errc::invalid_argument:
        case vmha::errc::protocol_error:
            return kEinval;
        case vmha::errc::no_space:
            return kEnospc;
        case vmha::errc::unsupported:
            return kEnotsup;
        case vmha::errc::shutting_down:
            return kEshutdown;
        default:
            return kEio;
    }
}

std::uint32_t nbd_error_from(const vmha::Error& e) {
    if (e.code.category() != vmha::error_category()) return kEio;
    return nbd_error_from(static_cast<vmha::errc>(e.code.value()));
}

Bytes encode_simple_reply(std::uint64_t cookie, std::uint32_t error) {
    Bytes out;
    encode_simple_reply(cookie, error, out);
    return out;
}

void encode_simple_reply(std::uint64_t cookie, std::uint32_t error, Bytes& out) {
    out.reserve(out.size() + kSimpleReplySize);
    put_u32(out, kSimpleReplyMagic);
    put_u32(out, error);
    put_u64(out, cookie);
}

Bytes encode_chunk_header(std::uint16_t flags, std::uint16_t type, std::uint64_t cookie,
                          std::uint32_t payload_length) {
    Bytes out;
    out.reserve(kStructuredHeaderSize + 8);
    put_u32(out, kStructuredReplyMagic);
    put_u16(out, flags);
    put_u16(out, type);
    put_u64(out, cookie);
    put_u32(out, payload_length);
    return out;
}

Bytes encode_offset_data_header(std::uint64_t cookie, std::uint64_t offset,
                                std::uint32_t data_length) {
    Bytes out = encode_chunk_header(kReplyFlagDone, kReplyTypeOffsetData, cookie, data_length + 8);
    put_u64(out, offset);
    return out;
}

Bytes encode_error_chunk(std::uint64_t cookie, std::uint32_t error, std::string_view message) {
    const std::string_view m = message.substr(0, kMaxStringLength);
    Bytes out = encode_chunk_header(kReplyFlagDone, kReplyTypeError, cookie,
                                    static_cast<std::uint32_t>(6 + m.size()));
    put_u32(out, error);
    put_u16(out, static_cast<std::uint16_t>(m.size()));
    put_string(out, m);
    return out;
}

Bytes encode_block_status_chunk(std::uint64_t cookie, std::uint32_t context_id,
                                std::span<const Extent> extents) {
    Bytes out = encode_chunk_header(kReplyFlagDone, kReplyTypeBlockStatus, cookie,
                                    static_cast<std::uint32_t>(4 + 8 * extents.size()));
    put_u32(out, context_id);
    for (const Extent& e : extents) {
        put_u32(out, e.length);
        put_u32(out, e.flags);
    }
    return out;
}

}  // namespace imagesync::nbd
