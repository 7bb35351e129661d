// The replication protocol between two imagesyncd processes of one module (TCP).
//
// Every message is one frame: a fixed 32-byte header, then `length` payload bytes.
//
//   u32 magic      0x76484131 ("vHA1")
//   u16 version    1; a peer speaking another version is refused at HELLO
//   u16 flags      reserved, must be 0 (a set bit is a protocol error until it means something)
//   u16 type       MessageType
//   u16 reserved   must be 0
//   u32 length     payload bytes; at most max_payload, checked before anything is allocated
//   u64 cookie     chosen by the sender of a request, echoed by its ACK
//   u64 reserved2  must be 0
//
// All integers are big-endian. Payload layouts are in encode()/decode() below and in
// docs/imagesync-peer-protocol.md. A malformed frame (bad magic, version, reserved bits, a
// length over the limit or one that does not match the type) is a protocol error: the
// receiver logs it and closes that connection; nothing else is affected.
//
// Ordering: one TCP stream per module carries all messages in order. The primary sends
// WRITE / WRITE_ZEROES / TRIM / FLUSH in the order its interval lock granted them, and the
// secondary applies overlapping operations in that same order, so both copies converge.
// Operations are idempotent (absolute offsets, no read-modify-write), so resending one after a
// reconnect is harmless.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include <vmha/error.h>

namespace imagesync::peer {

using Bytes = std::vector<std::byte>;
using ByteView = std::span<const std::byte>;

inline constexpr std::uint32_t frame_magic = 0x76484131;
inline constexpr std::uint16_t protocol_version = 1;
inline constexpr std::size_t header_size = 32;
// Largest payload: a 32 MiB write (the NBD maximum) plus its small fixed part.
inline constexpr std::uint32_t max_payload = (32u << 20) + 64;
inline constexpr std::size_t max_name = 255;
inline constexpr std::size_t max_exports = 64;
inline constexpr std::size_t max_history = 8;

enum class MessageType : std::uint16_t {
    hello = 1,         // both ways, first message: who I am, what I hold
    write = 2,         // primary -> secondary: bytes at an offset
    write_zeroes = 3,  // ... zeroes, no data on the wire
    trim = 4,          // ... deallocate (reads back as zeroes on both sides)
    flush = 5,         // ... make everything acknowledged so far durable
    ack = 6,           // reply to a request, by cookie, with a status
    ping = 7,          // keepalive; answered by ack
    resync_data = 8,   // sync source -> target: a resync chunk (like write)
    resync_zeroes = 9, // sync source -> target: a resync chunk that is all zeroes
    state = 10,        // role / data-state change announcement
    extents = 11,      // resync target -> source: ranges that must join the resync (its
                       // activity-log extents after it crashed as primary)
    checksum_request = 12,  // verify: checksums of `count` chunks from `offset`, please
    checksum_reply = 13,    // ... here they are (cookie of the request)
};

// Where an operation applies: which export, which bytes.
struct Range {
    std::uint32_t export_index = 0;
    std::uint64_t offset = 0;
    std::uint32_t length = 0;
};

struct ExportInfo {
    std::string name;
    std::uint64_t size = 0;
};

// HELLO flag bits.
inline constexpr std::uint16_t hello_crashed_primary = 1;  // this copy crashed as primary
inline constexpr std::uint16_t hello_images_empty = 2;     // every image is one big hole
inline constexpr std::uint16_t hello_has_changes = 4;      // the split-brain trailer follows
inline constexpr std::uint16_t hello_known_flags = 7;

// Split-brain policies (HELLO trailer, imagesyncd --split-brain).
enum class SplitBrainPolicy : std::uint8_t {
    disconnect = 0,            // refuse and keep both copies until an operator decides
    discard_zero_changes = 1,  // the side that wrote nothing since the split is the resync target
};
inline constexpr std::uint8_t max_split_brain_policy = 1;

struct Hello {
    std::string module;
    std::string node;
    std::uint8_t role = 0;        // 1 primary, 2 secondary
    std::uint8_t data_state = 0;  // 1 UpToDate, 2 Inconsistent, 3 Outdated, 4 Unknown
    std::uint16_t hello_flags = 0;  // hello_* bits above
    std::uint32_t chunk_size = 0;
    std::uint64_t current_generation = 0;
    std::uint64_t bitmap_generation = 0;
    std::vector<std::uint64_t> history;  // at most max_history
    std::vector<ExportInfo> exports;     // at most max_exports
    // Trailer, present on the wire when hello_flags has hello_has_changes (encode() sets the bit
    // when this is set): the bytes this node's dirty maps hold (what it wrote since its bitmap
    // generation) and its split-brain policy.
    struct Changes {
        std::uint64_t changed_bytes = 0;
        SplitBrainPolicy policy = SplitBrainPolicy::disconnect;
        bool operator==(const Changes&) const = default;
    };
    std::optional<Changes> changes;
};

struct Write {
    Range range;
    bool fua = false;
    ByteView data;  // length == range.length; points into the frame buffer when decoded
};

struct WriteZeroes {
    Range range;
    bool fua = false;
    bool may_trim = false;
};

struct Trim {
    Range range;
    bool fua = false;
};

struct Flush {};

struct Ack {
    std::uint32_t status = 0;  // 0 = done; else a vmha::errc value
};

struct Ping {};

struct ResyncData {
    Range range;
    ByteView data;
};

struct ResyncZeroes {
    Range range;
};

struct State {
    std::uint8_t role = 0;
    std::uint8_t data_state = 0;
    std::uint64_t current_generation = 0;
};

// Up to max_extents ranges of one export; the list is sent once, right after the handshake.
inline constexpr std::size_t max_extents = 65536;
struct Extents {
    std::uint32_t export_index = 0;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;  // offset, length
};

// Online verify: the XXH3-64 of each chunk (the last chunk of an export may be short).
inline constexpr std::uint32_t max_checksum_chunks = 4096;
struct ChecksumRequest {
    std::uint32_t export_index = 0;
    std::uint32_t chunk_size = 0;
    std::uint64_t offset = 0;  // a multiple of chunk_size
    std::uint32_t count = 0;   // 1 .. max_checksum_chunks
};
struct ChecksumReply {
    std::uint32_t export_index = 0;
    std::uint64_t offset = 0;
    std::vector<std::uint64_t> checksums;  // one per chunk; empty when the peer could not read
    std::uint32_t status = 0;              // 0, or the vmha::errc that stopped the peer
};

using Body = std::variant<Hello, Write, WriteZeroes, Trim, Flush, Ack, Ping, ResyncData,
                          ResyncZeroes, State, Extents, ChecksumRequest, ChecksumReply>;

struct Message {
    std::uint64_t cookie = 0;
    Body body;
};

MessageType type_of(const Body& body);
const char* type_name(MessageType type);

// Appends the frame of `m` to `out`.
void encode(const Message& m, Bytes& out);
// The frame header alone, for a write whose data is sent from another buffer (scatter/gather):
// encode_write_header() + the data bytes form the same frame as encode() of the Write.
void encode_write_header(std::uint64_t cookie, const Range& range, bool fua, Bytes& out);

struct Header {
    MessageType type{};
    std::uint32_t length = 0;
    std::uint64_t cookie = 0;
};

// Checks a 32-byte header. Errors: errc::protocol_error (magic, reserved fields, unknown type,
// length over the limit), errc::version_mismatch.
vmha::Result<Header> decode_header(ByteView bytes);

// Decodes a payload of `header.length` bytes. Views (Write::data) point into `payload`.
vmha::Result<Message> decode_payload(const Header& header, ByteView payload);

// Incremental decoding of a byte stream: feed what the socket gave, take whole messages.
class FrameDecoder {
public:
    // Appends received bytes.
    void feed(ByteView bytes);
    // The next whole message, nullopt if more bytes are needed, or an error (the connection
    // must then be closed; the decoder stays failed). Views in the message stay valid until
    // the next call to next() or feed().
    vmha::Result<std::optional<Message>> next();
    std::size_t buffered() const { return buffer_.size() - consumed_; }

private:
    Bytes buffer_;
    std::size_t consumed_ = 0;
    std::optional<Header> header_;
    std::optional<vmha::Error> failed_;
};

}  // namespace imagesync::peer
