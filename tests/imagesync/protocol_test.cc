// Unit tests of the pure NBD codec and the option negotiation state machine.
#include <gtest/gtest.h>

#include "nbd_codec.h"
#include "nbd_protocol.h"
#include "negotiation.h"

namespace imagesync::nbd {
namespace {

Bytes bytes(std::initializer_list<unsigned> values) {
    Bytes b;
    for (unsigned v : values) b.push_back(static_cast<std::byte>(v));
    return b;
}

Bytes info_request(std::string_view name, std::initializer_list<std::uint16_t> types) {
    Bytes b;
    put_u32(b, static_cast<std::uint32_t>(name.size()));
    put_string(b, name);
    put_u16(b, static_cast<std::uint16_t>(types.size()));
    for (auto t : types) put_u16(b, t);
    return b;
}

Bytes meta_request(std::string_view name, std::initializer_list<std::string_view> queries) {
    Bytes b;
    put_u32(b, static_cast<std::uint32_t>(name.size()));
    put_string(b, name);
    put_u32(b, static_cast<std::uint32_t>(queries.size()));
    for (auto q : queries) {
        put_u32(b, static_cast<std::uint32_t>(q.size()));
        put_string(b, q);
    }
    return b;
}

// Splits a stream of option replies into (option, type, data) triples.
struct Rep {
    std::uint32_t option;
    std::uint32_t type;
    Bytes data;
};
std::vector<Rep> split_replies(const Bytes& b) {
    std::vector<Rep> out;
    std::size_t at = 0;
    while (at < b.size()) {
        EXPECT_GE(b.size() - at, 20U);
        EXPECT_EQ(get_u64(b, at), kOptionReplyMagic);
        const std::uint32_t len = get_u32(b, at + 16);
        out.push_back({get_u32(b, at + 8), get_u32(b, at + 12),
                       Bytes(b.begin() + static_cast<long>(at + 20),
                             b.begin() + static_cast<long>(at + 20 + len))});
        at += 20 + len;
    }
    return out;
}

TEST(NbdCodec, GreetingIsFixedNewstyleWithNoZeroes) {
    const Bytes g = encode_greeting();
    ASSERT_EQ(g.size(), 18U);
    EXPECT_EQ(get_u64(g, 0), 0x4e42444d41474943ULL);
    EXPECT_EQ(get_u64(g, 8), 0x49484156454F5054ULL);
    EXPECT_EQ(get_u16(g, 16), 3);
}

TEST(NbdCodec, ClientFlags) {
    EXPECT_TRUE(parse_client_flags(bytes({0, 0, 0, 3})));
    EXPECT_TRUE(parse_client_flags(bytes({0, 0, 0, 3}))->no_zeroes);
    EXPECT_FALSE(parse_client_flags(bytes({0, 0, 0, 1}))->no_zeroes);
    EXPECT_FALSE(parse_client_flags(bytes({0, 0, 0, 2}))) << "without FIXED_NEWSTYLE";
    EXPECT_FALSE(parse_client_flags(bytes({0, 0, 0, 7}))) << "unknown bit";
    EXPECT_FALSE(parse_client_flags(bytes({0, 0, 3})));
}

TEST(NbdCodec, RequestHeaderRoundTrip) {
    const Request r{.flags = kCmdFlagFua,
                    .type = kCmdWrite,
                    .cookie = 0x0102030405060708ULL,
                    .offset = 1ULL << 40,
                    .length = 65536};
    const Bytes b = encode_request_header(r);
    ASSERT_EQ(b.size(), kRequestHeaderSize);
    auto p = parse_request_header(b);
    ASSERT_TRUE(p);
    EXPECT_EQ(p->flags, r.flags);
    EXPECT_EQ(p->type, r.type);
    EXPECT_EQ(p->cookie, r.cookie);
    EXPECT_EQ(p->offset, r.offset);
    EXPECT_EQ(p->length, r.length);

    Bytes bad = b;
    bad[0] = std::byte{0};
    auto e = parse_request_header(bad);
    ASSERT_FALSE(e);
    EXPECT_TRUE(e.error().is(vmha::errc::protocol_error));
}

TEST(NbdCodec, InfoRequestParsing) {
    auto ok = parse_info_request(info_request("disk", {kInfoBlockSize, kInfoName}));
    ASSERT_TRUE(ok);
    EXPECT_EQ(ok->export_name, "disk");
    EXPECT_EQ(ok->info_types, (std::vector<std::uint16_t>{kInfoBlockSize, kInfoName}));

    Bytes cut = info_request("disk", {kInfoBlockSize});
    cut.pop_back();
    EXPECT_FALSE(parse_info_request(cut));
    Bytes extra = info_request("disk", {});
    extra.push_back(std::byte{0});
    EXPECT_FALSE(parse_info_request(extra));
    EXPECT_FALSE(parse_info_request(bytes({0, 0, 0x10, 0x01})))  // 4097-byte name claimed
        << "name longer than 4096";
    EXPECT_FALSE(parse_info_request({}));
}

TEST(NbdCodec, MetaContextRequestParsing) {
    auto ok = parse_meta_context_request(meta_request("d", {"base:allocation", "qemu:x"}));
    ASSERT_TRUE(ok);
    EXPECT_EQ(ok->queries.size(), 2U);
    Bytes huge_count;
    put_u32(huge_count, 0);
    put_u32(huge_count, 0xffffffffU);
    EXPECT_FALSE(parse_meta_context_request(huge_count)) << "count not bounded by the data";
}

TEST(NbdCodec, RepliesHaveTheDocumentedLayout) {
    const Bytes s = encode_simple_reply(7, kEinval);
    ASSERT_EQ(s.size(), 16U);
    EXPECT_EQ(get_u32(s, 0), kSimpleReplyMagic);
    EXPECT_EQ(get_u32(s, 4), kEinval);
    EXPECT_EQ(get_u64(s, 8), 7U);

    const Bytes d = encode_offset_data_header(9, 4096, 512);
    ASSERT_EQ(d.size(), 28U);
    EXPECT_EQ(get_u32(d, 0), kStructuredReplyMagic);
    EXPECT_EQ(get_u16(d, 4), kReplyFlagDone);
    EXPECT_EQ(get_u16(d, 6), kReplyTypeOffsetData);
    EXPECT_EQ(get_u64(d, 8), 9U);
    EXPECT_EQ(get_u32(d, 16), 520U);
    EXPECT_EQ(get_u64(d, 20), 4096U);

    const Bytes e = encode_error_chunk(3, kEio, "boom");
    EXPECT_EQ(get_u16(e, 6), kReplyTypeError);
    EXPECT_EQ(get_u32(e, 16), 10U);
    EXPECT_EQ(get_u32(e, 20), kEio);
    EXPECT_EQ(get_u16(e, 24), 4);

    const Extent extents[] = {{4096, 0}, {8192, kStateHole | kStateZero}};
    const Bytes b = encode_block_status_chunk(5, 1, extents);
    EXPECT_EQ(get_u16(b, 6), kReplyTypeBlockStatus);
    EXPECT_EQ(get_u32(b, 16), 4U + 16U);
    EXPECT_EQ(get_u32(b, 20), 1U);
    EXPECT_EQ(get_u32(b, 28), 0U);
    EXPECT_EQ(get_u32(b, 36), 3U);

    EXPECT_EQ(encode_export_name_reply(1, 1, true).size(), 10U);
    EXPECT_EQ(encode_export_name_reply(1, 1, false).size(), 134U);
}

TEST(NbdCodec, ErrorMappingIsOneTable) {
    EXPECT_EQ(nbd_error_from(vmha::errc::read_only), kEperm);
    EXPECT_EQ(nbd_error_from(vmha::errc::invalid_argument), kEinval);
    EXPECT_EQ(nbd_error_from(vmha::errc::no_space), kEnospc);
    EXPECT_EQ(nbd_error_from(vmha::errc::unsupported), kEnotsup);
    EXPECT_EQ(nbd_error_from(vmha::errc::io_error), kEio);
    EXPECT_EQ(nbd_error_from(vmha::errc::timeout), kEio);
}

struct CheckCase {
    const char* what;
    Request request;
    bool read_only;
    std::uint32_t expected;  // 0 = accepted
};

TEST(NbdCodec, CheckRequestWalksTheRules) {
    constexpr std::uint64_t size = 1 << 20;
    const ExportInfo rw{.name = "d", .size = size, .read_only = false};
    const ExportInfo ro{.name = "d", .size = size, .read_only = true};
    const CheckCase cases[] = {
        {"read ok", {0, kCmdRead, 1, 0, 4096}, false, 0},
        {"read to the last byte", {0, kCmdRead, 1, size - 512, 512}, false, 0},
        {"read beyond", {0, kCmdRead, 1, size - 512, 1024}, false, kEinval},
        {"read wrapping", {0, kCmdRead, 1, UINT64_MAX, 2}, false, kEinval},
        {"read too long", {0, kCmdRead, 1, 0, kMaxPayload + 1}, false, kEinval},
        {"read zero length", {0, kCmdRead, 1, 0, 0}, false, kEinval},
        {"read DF", {kCmdFlagDf, kCmdRead, 1, 0, 512}, false, 0},
        {"write beyond", {0, kCmdWrite, 1, size, 512}, false, kEnospc},
        {"write FUA", {kCmdFlagFua, kCmdWrite, 1, 0, 512}, false, 0},
        {"write on read-only", {0, kCmdWrite, 1, 0, 512}, true, kEperm},
        {"trim on read-only", {0, kCmdTrim, 1, 0, 512}, true, kEperm},
        {"zeroes on read-only", {0, kCmdWriteZeroes, 1, 0, 512}, true, kEperm},
        {"trim beyond", {0, kCmdTrim, 1, size, 512}, false, kEinval},
        {"zeroes beyond", {0, kCmdWriteZeroes, 1, size, 512}, false, kEnospc},
        {"zeroes fast no-hole",
         {kCmdFlagFastZero | kCmdFlagNoHole, kCmdWriteZeroes, 1, 0, 512},
         false,
         0},
        {"no-hole on write", {kCmdFlagNoHole, kCmdWrite, 1, 0, 512}, false, kEinval},
        {"flush", {0, kCmdFlush, 1, 0, 0}, false, 0},
        {"flush with length", {0, kCmdFlush, 1, 0, 1}, false, kEinval},
        {"FUA on read-only (not advertised)", {kCmdFlagFua, kCmdRead, 1, 0, 512}, true, kEinval},
        {"unknown command", {0, 99, 1, 0, 512}, false, kEinval},
        {"unknown flag", {1U << 15, kCmdRead, 1, 0, 512}, false, kEinval},
        {"block status without context", {0, kCmdBlockStatus, 1, 0, 512}, false, kEinval},
        {"cache", {0, kCmdCache, 1, 0, 512}, false, 0},
    };
    for (const CheckCase& c : cases) {
        const ExportInfo& e = c.read_only ? ro : rw;
        const RequestContext ctx{.export_size = e.size,
                                 .transmission_flags = Negotiator::transmission_flags(e, true),
                                 .structured_replies = true,
                                 .base_allocation = false};
        const vmha::Status s = check_request(c.request, ctx);
        const std::uint32_t got = s ? 0U : nbd_error_from(s.error());
        EXPECT_EQ(got, c.expected) << c.what << (s ? "" : ": " + s.error().message);
    }
    EXPECT_FALSE(check_payload_length({0, kCmdWrite, 1, 0, kMaxPayload + 1}));
    EXPECT_TRUE(check_payload_length({0, kCmdWrite, 1, 0, kMaxPayload}));
    EXPECT_TRUE(check_payload_length({0, kCmdRead, 1, 0, 0xffffffffU}));
}

class NegotiatorTest : public ::testing::Test {
  protected:
    NegotiatorTest()
        : n_({ExportInfo{.name = "disk", .size = 1 << 20, .read_only = false},
              ExportInfo{.name = "odd", .size = 1000, .read_only = true}}) {
        EXPECT_TRUE(n_.accept_client_flags(bytes({0, 0, 0, 3})));
    }
    Negotiator n_;
};

TEST_F(NegotiatorTest, GoWithStructuredRepliesAndBaseAllocation) {
    auto s = n_.handle_option(kOptStructuredReply, {});
    EXPECT_EQ(split_replies(s.reply).at(0).type, kRepAck);
    s = n_.handle_option(kOptSetMetaContext, meta_request("disk", {"base:allocation"}));
    auto reps = split_replies(s.reply);
    ASSERT_EQ(reps.size(), 2U);
    EXPECT_EQ(reps[0].type, kRepMetaContext);
    EXPECT_EQ(get_u32(reps[0].data, 0), kBaseAllocationContextId);
    EXPECT_EQ(reps[1].type, kRepAck);

    s = n_.handle_option(kOptGo, info_request("disk", {kInfoBlockSize, kInfoName}));
    EXPECT_EQ(s.next, Negotiator::Next::transmission);
    reps = split_replies(s.reply);
    ASSERT_EQ(reps.size(), 4U);
    EXPECT_EQ(reps[0].type, kRepInfo);
    EXPECT_EQ(get_u16(reps[0].data, 0), kInfoExport);
    EXPECT_EQ(get_u64(reps[0].data, 2), 1U << 20);
    EXPECT_EQ(get_u16(reps[1].data, 0), kInfoBlockSize);
    EXPECT_EQ(get_u32(reps[1].data, 2), 512U);
    EXPECT_EQ(get_u32(reps[1].data, 6), 4096U);
    EXPECT_EQ(get_u32(reps[1].data, 10), kMaxPayload);
    EXPECT_EQ(get_u16(reps[2].data, 0), kInfoName);
    EXPECT_EQ(reps[3].type, kRepAck);
    EXPECT_TRUE(n_.negotiated().structured_replies);
    EXPECT_TRUE(n_.negotiated().base_allocation);
    EXPECT_EQ(n_.negotiated().export_index, 0U);
    EXPECT_NE(n_.negotiated().transmission_flags & kFlagSendDf, 0);
}

TEST_F(NegotiatorTest, MetaContextForAnotherExportDoesNotCarryOver) {
    n_.handle_option(kOptStructuredReply, {});
    n_.handle_option(kOptSetMetaContext, meta_request("odd", {"base:allocation"}));
    auto s = n_.handle_option(kOptGo, info_request("disk", {}));
    EXPECT_EQ(s.next, Negotiator::Next::transmission);
    EXPECT_FALSE(n_.negotiated().base_allocation);
}

TEST_F(NegotiatorTest, ReadOnlyOddSizedExport) {
    auto s = n_.handle_option(kOptInfo, info_request("odd", {}));
    EXPECT_EQ(s.next, Negotiator::Next::read_option);
    auto reps = split_replies(s.reply);
    const std::uint16_t flags = get_u16(reps[0].data, 10);
    EXPECT_NE(flags & kFlagReadOnly, 0);
    EXPECT_EQ(flags & (kFlagSendTrim | kFlagSendWriteZeroes | kFlagSendFua), 0);
    EXPECT_EQ(get_u32(reps[1].data, 2), 1U) << "minimum block 1 for a size not a multiple of 512";
}

TEST_F(NegotiatorTest, ExportNameSuccessAndFailure) {
    Bytes name;
    put_string(name, "disk");
    auto s = n_.handle_option(kOptExportName, name);
    EXPECT_EQ(s.next, Negotiator::Next::transmission);
    EXPECT_EQ(s.reply.size(), 10U) << "NO_ZEROES was negotiated";

    Negotiator other({ExportInfo{.name = "disk", .size = 512, .read_only = false}});
    ASSERT_TRUE(other.accept_client_flags(bytes({0, 0, 0, 1})));
    Bytes missing;
    put_string(missing, "nope");
    auto f = other.handle_option(kOptExportName, missing);
    EXPECT_EQ(f.next, Negotiator::Next::close);
    EXPECT_TRUE(f.reply.empty());
    auto d = other.handle_option(kOptExportName, {});
    EXPECT_EQ(d.next, Negotiator::Next::transmission) << "\"\" is the only export";
    EXPECT_EQ(d.reply.size(), 134U) << "zero padding without NO_ZEROES";
}

TEST_F(NegotiatorTest, EmptyNameIsAmbiguousWithTwoExports) {
    auto s = n_.handle_option(kOptGo, info_request("", {}));
    EXPECT_EQ(split_replies(s.reply).at(0).type, kRepErrUnknown);
}

TEST_F(NegotiatorTest, ErrorsKeepNegotiationGoing) {
    EXPECT_EQ(split_replies(n_.handle_option(kOptStartTls, {}).reply).at(0).type, kRepErrPolicy);
    EXPECT_EQ(split_replies(n_.handle_option(77, bytes({1})).reply).at(0).type, kRepErrUnsup);
    EXPECT_EQ(split_replies(n_.handle_option(kOptPeekExport, {}).reply).at(0).type, kRepErrUnsup);
    EXPECT_EQ(split_replies(n_.handle_option(kOptStructuredReply, bytes({1})).reply).at(0).type,
              kRepErrInvalid);
    EXPECT_EQ(split_replies(n_.handle_option(kOptGo, bytes({0, 0})).reply).at(0).type,
              kRepErrInvalid);
    auto list = split_replies(n_.handle_option(kOptList, {}).reply);
    ASSERT_EQ(list.size(), 3U);
    EXPECT_EQ(list[0].type, kRepServer);
    EXPECT_EQ(list[1].type, kRepServer);
    EXPECT_EQ(list[2].type, kRepAck);
    auto lm = split_replies(n_.handle_option(kOptListMetaContext, meta_request("disk", {})).reply);
    ASSERT_EQ(lm.size(), 2U);
    EXPECT_EQ(lm[0].type, kRepMetaContext);
    auto abort = n_.handle_option(kOptAbort, {});
    EXPECT_EQ(abort.next, Negotiator::Next::close);
    EXPECT_EQ(split_replies(abort.reply).at(0).type, kRepAck);
}

TEST_F(NegotiatorTest, EndlessOptionsAreCutOff) {
    Negotiator::Step s;
    for (std::size_t i = 0; i <= Negotiator::kMaxOptions; ++i) s = n_.handle_option(77, {});
    EXPECT_EQ(s.next, Negotiator::Next::close);
}

}  // namespace
}  // namespace imagesync::nbd
