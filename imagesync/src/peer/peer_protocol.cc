#include "peer/peer_protocol.h"

#include <cstring>
#include <limits>

#include <fmt/format.h>

#include "nbd_codec.h"

namespace imagesync::peer {
namespace {

using nbd::get_u16;
using nbd::get_u32;
using nbd::get_u64;
using nbd::put_u16;
using nbd::put_u32;
using nbd::put_u64;
using nbd::set_u32;

constexpr std::size_t range_size = 16;
constexpr std::size_t op_fixed = 4 + range_size;  // u16 flags, u16 reserved, range

constexpr std::uint16_t op_fua = 1u << 0;
constexpr std::uint16_t op_may_trim = 1u << 1;

vmha::Error protocol(std::string message) {
    return vmha::Error(vmha::errc::protocol_error, std::move(message));
}

void put_u8(Bytes& out, std::uint8_t v) { out.push_back(static_cast<std::byte>(v)); }

void put_short_string(Bytes& out, const std::string& s) {
    const std::size_t n = std::min(s.size(), max_name);
    put_u8(out, static_cast<std::uint8_t>(n));
    const auto* p = reinterpret_cast<const std::byte*>(s.data());
    out.insert(out.end(), p, p + n);
}

void put_range(Bytes& out, const Range& r) {
    put_u32(out, r.export_index);
    put_u64(out, r.offset);
    put_u32(out, r.length);
}

void put_op(Bytes& out, std::uint16_t flags, const Range& r) {
    put_u16(out, flags);
    put_u16(out, 0);
    put_range(out, r);
}

// Where put_header() writes the payload length, from the start of the header.
constexpr std::size_t length_at = 12;

void put_header(Bytes& out, MessageType type, std::uint32_t length, std::uint64_t cookie) {
    put_u32(out, frame_magic);
    put_u16(out, protocol_version);
    put_u16(out, 0);
    put_u16(out, static_cast<std::uint16_t>(type));
    put_u16(out, 0);
    put_u32(out, length);
    put_u64(out, cookie);
    put_u64(out, 0);
}

// Bounds-checked reading of a payload.
class Reader {
public:
    explicit Reader(ByteView in) : in_(in) {}
    bool have(std::size_t n) const { return in_.size() - at_ >= n; }
    std::uint8_t u8() { return static_cast<std::uint8_t>(in_[at_++]); }
    std::uint16_t u16() { auto v = get_u16(in_, at_); at_ += 2; return v; }
    std::uint32_t u32() { auto v = get_u32(in_, at_); at_ += 4; return v; }
    std::uint64_t u64() { auto v = get_u64(in_, at_); at_ += 8; return v; }
    std::string str(std::size_t n) {
        std::string s(reinterpret_cast<const char*>(in_.data() + at_), n);
        at_ += n;
        return s;
    }
    ByteView rest() const { return in_.subspan(at_); }
    std::size_t left() const { return in_.size() - at_; }

private:
    ByteView in_;
    std::size_t at_ = 0;
};

vmha::Result<Range> read_range(Reader& r, const char* what) {
    Range range;
    range.export_index = r.u32();
    range.offset = r.u64();
    range.length = r.u32();
    if (range.offset > std::numeric_limits<std::uint64_t>::max() - range.length) {
        return protocol(fmt::format("{} at offset {} with length {} wraps around", what,
                                    range.offset, range.length));
    }
    return range;
}

// Reads the fixed part of a write-like operation: flags (only `allowed` bits), reserved, range.
vmha::Result<std::pair<std::uint16_t, Range>> read_op(Reader& r, std::uint16_t allowed,
                                                      const char* what) {
    const std::uint16_t flags = r.u16();
    const std::uint16_t reserved = r.u16();
    if ((flags & ~allowed) != 0 || reserved != 0) {
        return protocol(fmt::format("{} has unknown flags {:#06x} or reserved bits {:#06x}", what,
                                    flags, reserved));
    }
    auto range = read_range(r, what);
    if (!range) return std::move(range).error();
    return std::pair{flags, *range};
}

std::uint32_t fixed_length(MessageType type) {
    switch (type) {
        case MessageType::write_zeroes:
        case MessageType::trim:
        case MessageType::resync_zeroes: return op_fixed;
        case MessageType::flush:
        case MessageType::ping: return 0;
        case MessageType::ack: return 4;
        case MessageType::checksum_request: return 20;
        case MessageType::state: return 16;
        default: return std::numeric_limits<std::uint32_t>::max();  // variable
    }
}

}  // namespace

MessageType type_of(const Body& body) {
    struct Visitor {
        MessageType operator()(const Hello&) const { return MessageType::hello; }
        MessageType operator()(const Write&) const { return MessageType::write; }
        MessageType operator()(const WriteZeroes&) const { return MessageType::write_zeroes; }
        MessageType operator()(const Trim&) const { return MessageType::trim; }
        MessageType operator()(const Flush&) const { return MessageType::flush; }
        MessageType operator()(const Ack&) const { return MessageType::ack; }
        MessageType operator()(const Ping&) const { return MessageType::ping; }
        MessageType operator()(const ResyncData&) const { return MessageType::resync_data; }
        MessageType operator()(const ResyncZeroes&) const { return MessageType::resync_zeroes; }
        MessageType operator()(const State&) const { return MessageType::state; }
        MessageType operator()(const Extents&) const { return MessageType::extents; }
        MessageType operator()(const ChecksumRequest&) const { return MessageType::checksum_request; }
        MessageType operator()(const ChecksumReply&) const { return MessageType::checksum_reply; }
    };
    return std::visit(Visitor{}, body);
}

const char* type_name(MessageType type) {
    switch (type) {
        case MessageType::hello: return "HELLO";
        case MessageType::write: return "WRITE";
        case MessageType::write_zeroes: return "WRITE_ZEROES";
        case MessageType::trim: return "TRIM";
        case MessageType::flush: return "FLUSH";
        case MessageType::ack: return "ACK";
        case MessageType::ping: return "PING";
        case MessageType::resync_data: return "RESYNC_DATA";
        case MessageType::resync_zeroes: return "RESYNC_ZEROES";
        case MessageType::state: return "STATE";
        case MessageType::extents: return "EXTENTS";
        case MessageType::checksum_request: return "CHECKSUM_REQUEST";
        case MessageType::checksum_reply: return "CHECKSUM_REPLY";
    }
    return "UNKNOWN";
}

void encode_write_header(std::uint64_t cookie, const Range& range, bool fua, Bytes& out) {
    out.reserve(out.size() + header_size + op_fixed);
    put_header(out, MessageType::write, static_cast<std::uint32_t>(op_fixed + range.length), cookie);
    put_op(out, fua ? op_fua : 0, range);
}

void encode(const Message& m, Bytes& out) {
    // The payload goes straight after the header (no temporary buffer: an ACK per write); its
    // length is written into the header once known.
    const std::size_t start = out.size();
    out.reserve(start + header_size + 64);  // every fixed-size message fits
    put_header(out, type_of(m.body), 0, m.cookie);
    std::visit(
        [&](const auto& b) {
            using T = std::decay_t<decltype(b)>;
            if constexpr (std::is_same_v<T, Hello>) {
                put_short_string(out, b.module);
                put_short_string(out, b.node);
                put_u8(out, b.role);
                put_u8(out, b.data_state);
                put_u16(out, static_cast<std::uint16_t>(
                                     (b.hello_flags & ~hello_has_changes) |
                                     (b.changes ? hello_has_changes : 0)));
                put_u32(out, b.chunk_size);
                put_u64(out, b.current_generation);
                put_u64(out, b.bitmap_generation);
                const std::size_t h = std::min(b.history.size(), max_history);
                put_u8(out, static_cast<std::uint8_t>(h));
                for (std::size_t i = 0; i < h; ++i) put_u64(out, b.history[i]);
                const std::size_t e = std::min(b.exports.size(), max_exports);
                put_u16(out, static_cast<std::uint16_t>(e));
                for (std::size_t i = 0; i < e; ++i) {
                    put_short_string(out, b.exports[i].name);
                    put_u64(out, b.exports[i].size);
                }
                if (b.changes) {
                    put_u64(out, b.changes->changed_bytes);
                    put_u8(out, static_cast<std::uint8_t>(b.changes->policy));
                }
            } else if constexpr (std::is_same_v<T, Write>) {
                put_op(out, b.fua ? op_fua : 0, b.range);
                out.insert(out.end(), b.data.begin(), b.data.end());
            } else if constexpr (std::is_same_v<T, WriteZeroes>) {
                put_op(out, static_cast<std::uint16_t>((b.fua ? op_fua : 0) |
                                                           (b.may_trim ? op_may_trim : 0)),
                       b.range);
            } else if constexpr (std::is_same_v<T, Trim>) {
                put_op(out, b.fua ? op_fua : 0, b.range);
            } else if constexpr (std::is_same_v<T, ResyncZeroes>) {
                put_op(out, 0, b.range);
            } else if constexpr (std::is_same_v<T, ResyncData>) {
                put_op(out, 0, b.range);
                out.insert(out.end(), b.data.begin(), b.data.end());
            } else if constexpr (std::is_same_v<T, Ack>) {
                put_u32(out, b.status);
            } else if constexpr (std::is_same_v<T, Extents>) {
                const std::size_t n = std::min(b.ranges.size(), max_extents);
                put_u32(out, b.export_index);
                put_u32(out, static_cast<std::uint32_t>(n));
                for (std::size_t i = 0; i < n; ++i) {
                    put_u64(out, b.ranges[i].first);
                    put_u64(out, b.ranges[i].second);
                }
            } else if constexpr (std::is_same_v<T, ChecksumRequest>) {
                put_u32(out, b.export_index);
                put_u32(out, b.chunk_size);
                put_u64(out, b.offset);
                put_u32(out, b.count);
            } else if constexpr (std::is_same_v<T, ChecksumReply>) {
                const std::size_t n = std::min<std::size_t>(b.checksums.size(), max_checksum_chunks);
                put_u32(out, b.export_index);
                put_u64(out, b.offset);
                put_u32(out, b.status);
                put_u32(out, static_cast<std::uint32_t>(n));
                for (std::size_t i = 0; i < n; ++i) put_u64(out, b.checksums[i]);
            } else if constexpr (std::is_same_v<T, State>) {
                put_u8(out, b.role);
                put_u8(out, b.data_state);
                put_u16(out, 0);
                put_u32(out, 0);
                put_u64(out, b.current_generation);
            }
        },
        m.body);
    set_u32(out, start + length_at, static_cast<std::uint32_t>(out.size() - start - header_size));
}

vmha::Result<Header> decode_header(ByteView bytes) {
    if (bytes.size() < header_size) return protocol("a frame header is 32 bytes");
    const std::uint32_t magic = get_u32(bytes, 0);
    if (magic != frame_magic) {
        return protocol(fmt::format("bad frame magic {:#010x} (expected {:#010x})", magic,
                                    frame_magic));
    }
    const std::uint16_t version = get_u16(bytes, 4);
    if (version != protocol_version) {
        return vmha::Error(vmha::errc::version_mismatch,
                           fmt::format("peer speaks replication protocol version {}, this "
                                       "imagesyncd speaks version {}",
                                       version, protocol_version));
    }
    const std::uint16_t flags = get_u16(bytes, 6);
    const std::uint16_t raw_type = get_u16(bytes, 8);
    const std::uint16_t reserved = get_u16(bytes, 10);
    const std::uint64_t reserved2 = get_u64(bytes, 24);
    if (flags != 0 || reserved != 0 || reserved2 != 0) {
        return protocol(fmt::format("frame has reserved bits set (flags {:#06x})", flags));
    }
    if (raw_type < static_cast<std::uint16_t>(MessageType::hello) ||
        raw_type > static_cast<std::uint16_t>(MessageType::checksum_reply)) {
        return protocol(fmt::format("unknown message type {}", raw_type));
    }
    Header h{static_cast<MessageType>(raw_type), get_u32(bytes, 12), get_u64(bytes, 16)};
    if (h.length > max_payload) {
        return protocol(fmt::format("{} payload of {} bytes is over the limit of {}",
                                    type_name(h.type), h.length, max_payload));
    }
    const std::uint32_t fixed = fixed_length(h.type);
    if (fixed != std::numeric_limits<std::uint32_t>::max() && h.length != fixed) {
        return protocol(fmt::format("{} payload is {} bytes; it must be {}", type_name(h.type),
                                    h.length, fixed));
    }
    return h;
}

vmha::Result<Message> decode_payload(const Header& header, ByteView payload) {
    if (payload.size() != header.length) return protocol("payload length does not match header");
    Reader r(payload);
    Message m;
    m.cookie = header.cookie;
    const char* what = type_name(header.type);
    switch (header.type) {
        case MessageType::hello: {
            Hello h;
            auto str = [&](std::string& s) {
                if (!r.have(1)) return false;
                const std::size_t n = r.u8();
                if (!r.have(n)) return false;
                s = r.str(n);
                return true;
            };
            if (!str(h.module) || !str(h.node) || !r.have(1 + 1 + 2 + 4 + 8 + 8 + 1)) {
                return protocol("HELLO is truncated");
            }
            h.role = r.u8();
            h.data_state = r.u8();
            h.hello_flags = r.u16();
            h.chunk_size = r.u32();
            h.current_generation = r.u64();
            h.bitmap_generation = r.u64();
            const std::size_t nh = r.u8();
            if (nh > max_history || !r.have(nh * 8 + 2)) return protocol("HELLO history is malformed");
            for (std::size_t i = 0; i < nh; ++i) h.history.push_back(r.u64());
            const std::size_t ne = r.u16();
            if (ne > max_exports) {
                return protocol(fmt::format("HELLO lists {} exports; at most {}", ne, max_exports));
            }
            for (std::size_t i = 0; i < ne; ++i) {
                ExportInfo e;
                if (!str(e.name) || !r.have(8)) return protocol("HELLO export list is truncated");
                e.size = r.u64();
                h.exports.push_back(std::move(e));
            }
            if ((h.hello_flags & hello_has_changes) != 0) {
                if (!r.have(8 + 1)) return protocol("HELLO split-brain trailer is truncated");
                Hello::Changes c;
                c.changed_bytes = r.u64();
                const std::uint8_t policy = r.u8();
                if (policy > max_split_brain_policy) {
                    return protocol(fmt::format("HELLO names an unknown split-brain policy {}", policy));
                }
                c.policy = static_cast<SplitBrainPolicy>(policy);
                h.changes = c;
            }
            if (r.left() != 0) return protocol("HELLO has trailing bytes");
            if (h.role < 1 || h.role > 2 || h.data_state < 1 || h.data_state > 4 ||
                (h.hello_flags & ~hello_known_flags) != 0) {
                return protocol(fmt::format("HELLO has an invalid role {}, data state {} or flags "
                                            "{:#06x}",
                                            h.role, h.data_state, h.hello_flags));
            }
            m.body = std::move(h);
            return m;
        }
        case MessageType::write:
        case MessageType::resync_data: {
            if (!r.have(op_fixed)) return protocol(fmt::format("{} is truncated", what));
            auto op = read_op(r, header.type == MessageType::write ? op_fua : 0, what);
            if (!op) return std::move(op).error();
            if (r.left() != op->second.length) {
                return protocol(fmt::format("{} says {} data bytes but carries {}", what,
                                            op->second.length, r.left()));
            }
            if (header.type == MessageType::write) {
                m.body = Write{op->second, (op->first & op_fua) != 0, r.rest()};
            } else {
                m.body = ResyncData{op->second, r.rest()};
            }
            return m;
        }
        case MessageType::write_zeroes: {
            auto op = read_op(r, op_fua | op_may_trim, what);
            if (!op) return std::move(op).error();
            m.body = WriteZeroes{op->second, (op->first & op_fua) != 0,
                                 (op->first & op_may_trim) != 0};
            return m;
        }
        case MessageType::trim:
        case MessageType::resync_zeroes: {
            auto op = read_op(r, header.type == MessageType::trim ? op_fua : 0, what);
            if (!op) return std::move(op).error();
            if (header.type == MessageType::trim) {
                m.body = Trim{op->second, (op->first & op_fua) != 0};
            } else {
                m.body = ResyncZeroes{op->second};
            }
            return m;
        }
        case MessageType::flush: m.body = Flush{}; return m;
        case MessageType::ping: m.body = Ping{}; return m;
        case MessageType::ack: m.body = Ack{r.u32()}; return m;
        case MessageType::extents: {
            if (!r.have(8)) return protocol("EXTENTS is truncated");
            Extents e;
            e.export_index = r.u32();
            const std::size_t n = r.u32();
            if (n > max_extents || r.left() != n * 16) {
                return protocol(fmt::format("EXTENTS announces {} ranges in {} bytes", n, r.left()));
            }
            e.ranges.reserve(n);
            for (std::size_t i = 0; i < n; ++i) {
                const std::uint64_t offset = r.u64();
                const std::uint64_t length = r.u64();
                if (offset > std::numeric_limits<std::uint64_t>::max() - length) {
                    return protocol(fmt::format("EXTENTS range at offset {} with length {} wraps "
                                                "around",
                                                offset, length));
                }
                e.ranges.emplace_back(offset, length);
            }
            m.body = std::move(e);
            return m;
        }
        case MessageType::checksum_request: {
            ChecksumRequest c;
            c.export_index = r.u32();
            c.chunk_size = r.u32();
            c.offset = r.u64();
            c.count = r.u32();
            if (c.count == 0 || c.count > max_checksum_chunks || c.chunk_size == 0 ||
                (c.chunk_size & (c.chunk_size - 1)) != 0 || c.offset % c.chunk_size != 0) {
                return protocol(fmt::format("CHECKSUM_REQUEST for {} chunk(s) of {} bytes at offset "
                                            "{} is malformed",
                                            c.count, c.chunk_size, c.offset));
            }
            m.body = c;
            return m;
        }
        case MessageType::checksum_reply: {
            if (!r.have(20)) return protocol("CHECKSUM_REPLY is truncated");
            ChecksumReply c;
            c.export_index = r.u32();
            c.offset = r.u64();
            c.status = r.u32();
            const std::size_t n = r.u32();
            if (n > max_checksum_chunks || r.left() != n * 8) {
                return protocol(fmt::format("CHECKSUM_REPLY announces {} checksums in {} bytes", n,
                                            r.left()));
            }
            c.checksums.reserve(n);
            for (std::size_t i = 0; i < n; ++i) c.checksums.push_back(r.u64());
            m.body = std::move(c);
            return m;
        }
        case MessageType::state: {
            State s;
            s.role = r.u8();
            s.data_state = r.u8();
            const std::uint16_t a = r.u16();
            const std::uint32_t b = r.u32();
            s.current_generation = r.u64();
            if (a != 0 || b != 0 || s.role < 1 || s.role > 2 || s.data_state < 1 ||
                s.data_state > 4) {
                return protocol("STATE has reserved bits set or an invalid role or data state");
            }
            m.body = s;
            return m;
        }
    }
    return protocol("unknown message type");
}

void FrameDecoder::feed(ByteView bytes) {
    if (consumed_ > 0 && consumed_ == buffer_.size()) {
        buffer_.clear();
        consumed_ = 0;
    } else if (consumed_ > (1u << 20) && consumed_ * 2 > buffer_.size()) {
        buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(consumed_));
        consumed_ = 0;
    }
    buffer_.insert(buffer_.end(), bytes.begin(), bytes.end());
}

vmha::Result<std::optional<Message>> FrameDecoder::next() {
    if (failed_) return *failed_;
    const ByteView pending = ByteView(buffer_).subspan(consumed_);
    if (!header_) {
        if (pending.size() < header_size) return std::optional<Message>{};
        auto h = decode_header(pending.first(header_size));
        if (!h) {
            failed_ = h.error();
            return *failed_;
        }
        header_ = *h;
    }
    if (pending.size() < header_size + header_->length) return std::optional<Message>{};
    auto m = decode_payload(*header_, pending.subspan(header_size, header_->length));
    if (!m) {
        failed_ = m.error();
        return *failed_;
    }
    consumed_ += header_size + header_->length;
    header_.reset();
    return std::optional<Message>(std::move(*m));
}

}  // namespace imagesync::peer
