// NBD codec: pure parse and serialise functions, no I/O, no state.
//
// Parsers take exactly the bytes of one wire structure and return a value or a vmha::Error
// (errc::protocol_error for bytes that break framing, errc::invalid_argument for a
// well-framed but invalid request). Serialisers append big-endian bytes to a Bytes buffer.
// Everything here is exercised by the unit tests and the fuzz target.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <vmha/error.h>

namespace imagesync::nbd {

using Bytes = std::vector<std::byte>;
using ByteView = std::span<const std::byte>;

// Big-endian helpers.
void put_u16(Bytes& out, std::uint16_t v);
void put_u32(Bytes& out, std::uint32_t v);
void put_u64(Bytes& out, std::uint64_t v);
// Overwrites the 4 bytes at `at` (which must exist) with `v`, big-endian.
void set_u32(Bytes& out, std::size_t at, std::uint32_t v);
void put_string(Bytes& out, std::string_view s);
std::uint16_t get_u16(ByteView in, std::size_t at);
std::uint32_t get_u32(ByteView in, std::size_t at);
std::uint64_t get_u64(ByteView in, std::size_t at);

// ---- Handshake --------------------------------------------------------------------------

// The 18-byte server greeting: NBDMAGIC, IHAVEOPT, FIXED_NEWSTYLE|NO_ZEROES.
Bytes encode_greeting();

struct ClientFlags {
    bool no_zeroes = false;
};
// The 4-byte client flags; unknown bits or a missing FIXED_NEWSTYLE bit are a protocol error.
vmha::Result<ClientFlags> parse_client_flags(ByteView in);

struct OptionHeader {
    std::uint32_t option = 0;
    std::uint32_t length = 0;
};
// The 16-byte option header; a wrong magic is a protocol error. The length is not limited here.
vmha::Result<OptionHeader> parse_option_header(ByteView in);

// Option data of NBD_OPT_INFO / NBD_OPT_GO.
struct InfoRequest {
    std::string export_name;
    std::vector<std::uint16_t> info_types;
};
vmha::Result<InfoRequest> parse_info_request(ByteView data);

// Option data of NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT.
struct MetaContextRequest {
    std::string export_name;
    std::vector<std::string> queries;
};
vmha::Result<MetaContextRequest> parse_meta_context_request(ByteView data);

// Option reply: 20-byte header followed by the payload.
Bytes encode_option_reply(std::uint32_t option, std::uint32_t reply_type, ByteView payload = {});
Bytes encode_option_error(std::uint32_t option, std::uint32_t error_type, std::string_view message);
Bytes encode_rep_server(std::uint32_t option, std::string_view export_name);
Bytes encode_info_export(std::uint32_t option, std::uint64_t size, std::uint16_t flags);
Bytes encode_info_name(std::uint32_t option, std::string_view name);
Bytes encode_info_block_size(std::uint32_t option, std::uint32_t minimum, std::uint32_t preferred,
                             std::uint32_t maximum);
Bytes encode_meta_context(std::uint32_t option, std::uint32_t context_id, std::string_view name);
// The reply to NBD_OPT_EXPORT_NAME: size, flags and, unless NO_ZEROES, 124 zero bytes.
Bytes encode_export_name_reply(std::uint64_t size, std::uint16_t flags, bool no_zeroes);

// ---- Transmission -----------------------------------------------------------------------

struct Request {
    std::uint16_t flags = 0;
    std::uint16_t type = 0;
    std::uint64_t cookie = 0;
    std::uint64_t offset = 0;
    std::uint32_t length = 0;
};
// The 28-byte request header; a wrong magic is a protocol error (the connection must close).
vmha::Result<Request> parse_request_header(ByteView in);
Bytes encode_request_header(const Request& r);  // for tests and tools

// What a request is checked against.
struct RequestContext {
    std::uint64_t export_size = 0;
    std::uint16_t transmission_flags = 0;  // as advertised to this client
    bool structured_replies = false;
    bool base_allocation = false;  // base:allocation negotiated
};

// Whether a WRITE's payload can be read at all: a payload longer than kMaxPayload is a
// protocol error (the stream cannot be resynchronised cheaply), checked before allocating.
vmha::Status check_payload_length(const Request& r);

// The semantic checks of proto.md, pure: unknown command or flag, range, read-only, length.
// Errors carry the errc that nbd_error_from() turns into the wire error:
// invalid_argument -> EINVAL, no_space -> ENOSPC (writes beyond the end), read_only -> EPERM.
vmha::Status check_request(const Request& r, const RequestContext& ctx);

std::string_view command_name(std::uint16_t type);

// The one translation from vmha::errc to an NBD wire error.
std::uint32_t nbd_error_from(vmha::errc e);
std::uint32_t nbd_error_from(const vmha::Error& e);

// Replies.
Bytes encode_simple_reply(std::uint64_t cookie, std::uint32_t error);
// The same, appended to `out` (whose capacity a caller may be reusing).
void encode_simple_reply(std::uint64_t cookie, std::uint32_t error, Bytes& out);
Bytes encode_chunk_header(std::uint16_t flags, std::uint16_t type, std::uint64_t cookie,
                          std::uint32_t payload_length);
// Header of an OFFSET_DATA chunk with DONE set; `data_length` bytes of data must follow.
Bytes encode_offset_data_header(std::uint64_t cookie, std::uint64_t offset,
                                std::uint32_t data_length);
Bytes encode_error_chunk(std::uint64_t cookie, std::uint32_t error, std::string_view message);

struct Extent {
    std::uint32_t length = 0;
    std::uint32_t flags = 0;
};
Bytes encode_block_status_chunk(std::uint64_t cookie, std::uint32_t context_id,
                                std::span<const Extent> extents);

}  // namespace imagesync::nbd
