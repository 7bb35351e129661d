// libFuzzer target: every NBD parser imagesyncd runs on bytes from a client.
//
// The first byte picks the surface:
//   0: a whole negotiation -- 4 client flag bytes, then option headers and data -- driven
//      through nbd::Negotiator exactly as a connection does (same length limit);
//   1: a stream of 28-byte request headers through parse_request_header, check_payload_length
//      and check_request against several export contexts;
//   2: the INFO/GO and META_CONTEXT option payload parsers on the raw rest.
// Beyond "no crash, no over-read, no unchecked allocation", it checks invariants: every
// negotiation reply is well framed, and an accepted request stays inside its export.
#include <cstddef>
#include <cstdint>
#include <span>

#include "nbd_codec.h"
#include "nbd_protocol.h"
#include "negotiation.h"

using namespace imagesync::nbd;

namespace {

[[noreturn]] void fail() {
    __builtin_trap();
}

void check_replies(const Bytes& reply, std::uint32_t option, bool transmission) {
    if (transmission && option == kOptExportName) return;  // size + flags, no reply header
    std::size_t at = 0;
    while (at < reply.size()) {
        if (reply.size() - at < 20) fail();
        if (get_u64(reply, at) != kOptionReplyMagic) fail();
        if (get_u32(reply, at + 8) != option) fail();
        const std::uint32_t length = get_u32(reply, at + 16);
        if (reply.size() - at - 20 < length) fail();
        at += 20 + length;
    }
}

void negotiation(ByteView in) {
    Negotiator n({ExportInfo{.name = "disk", .size = 1 << 20, .read_only = false},
                  ExportInfo{.name = "ro", .size = 12345, .read_only = true}});
    if (in.size() < 4) return;
    if (!n.accept_client_flags(in.first(4))) return;
    in = in.subspan(4);
    while (in.size() >= kOptionHeaderSize) {
        auto header = parse_option_header(in.first(kOptionHeaderSize));
        if (!header) return;
        in = in.subspan(kOptionHeaderSize);
        if (header->length > kMaxOptionLength || header->length > in.size()) return;
        const auto step = n.handle_option(header->option, in.first(header->length));
        in = in.subspan(header->length);
        check_replies(step.reply, header->option, step.next == Negotiator::Next::transmission);
        if (step.next != Negotiator::Next::read_option) return;
    }
}

void requests(ByteView in) {
    const ExportInfo exports[] = {{.name = "a", .size = 1 << 20, .read_only = false},
                                  {.name = "b", .size = 1000, .read_only = true},
                                  {.name = "c", .size = UINT64_MAX, .read_only = false}};
    while (in.size() >= kRequestHeaderSize) {
        auto r = parse_request_header(in.first(kRequestHeaderSize));
        in = in.subspan(kRequestHeaderSize);
        if (!r) continue;
        (void)check_payload_length(*r);
        for (const ExportInfo& e : exports) {
            for (const bool structured : {false, true}) {
                const RequestContext ctx{
                    .export_size = e.size,
                    .transmission_flags = Negotiator::transmission_flags(e, structured),
                    .structured_replies = structured,
                    .base_allocation = structured};
                const auto s = check_request(*r, ctx);
                if (!s) {
                    (void)nbd_error_from(s.error());
                    continue;
                }
                const bool ranged = r->type != kCmdFlush && r->type != kCmdDisc;
                if (ranged &&
                    (r->length == 0 || r->offset > e.size || r->length > e.size - r->offset)) {
                    fail();
                }
                if (e.read_only &&
                    (r->type == kCmdWrite || r->type == kCmdTrim || r->type == kCmdWriteZeroes)) {
                    fail();
                }
                if (r->type == kCmdRead && r->length > kMaxPayload) fail();
            }
        }
    }
}

void payloads(ByteView in) {
    if (auto info = parse_info_request(in)) {
        if (info->export_name.size() > kMaxStringLength) fail();
    }
    if (auto meta = parse_meta_context_request(in)) {
        for (const auto& q : meta->queries) {
            if (q.size() > kMaxStringLength) fail();
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const ByteView in(reinterpret_cast<const std::byte*>(data + 1), size - 1);
    switch (data[0] % 3) {
        case 0:
            negotiation(in);
            break;
        case 1:
            requests(in);
            break;
        default:
            payloads(in);
            break;
    }
    return 0;
}
