// The replication protocol codec: round trips, and every kind of malformed frame refused
// with a reason before anything is allocated.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "peer/peer_protocol.h"

using namespace imagesync::peer;

namespace {

Bytes frame(const Message& m) {
    Bytes out;
    encode(m, out);
    return out;
}

// Views in the message point into `d`, which must outlive them.
Message decode_one(FrameDecoder& d, const Bytes& bytes) {
    d.feed(bytes);
    auto r = d.next();
    EXPECT_TRUE(r) << (r ? "" : r.error().message);
    EXPECT_TRUE(r && r->has_value());
    return std::move(**r);
}

Bytes data_of(std::size_t n, unsigned seed) {
    Bytes b(n);
    std::mt19937 rng(seed);
    for (auto& x : b) x = static_cast<std::byte>(rng());
    return b;
}

std::string error_of(Bytes bytes) {
    FrameDecoder d;
    d.feed(bytes);
    auto r = d.next();
    return r ? std::string("ok") : r.error().message;
}

}  // namespace

TEST(PeerProtocol, HelloRoundTrip) {
    Hello h;
    h.module = "web1";
    h.node = "hv1";
    h.role = 1;
    h.data_state = 1;
    h.hello_flags = 1;
    h.chunk_size = 65536;
    h.current_generation = 0x1122334455667788;
    h.bitmap_generation = 42;
    h.history = {7, 8};
    h.exports = {{"disk0", 1ull << 33}, {"disk1", 4096}};
    FrameDecoder d;
    const Message got = decode_one(d, frame({99, h}));
    EXPECT_EQ(got.cookie, 99u);
    const auto& g = std::get<Hello>(got.body);
    EXPECT_EQ(g.module, "web1");
    EXPECT_EQ(g.node, "hv1");
    EXPECT_EQ(g.hello_flags, 1);
    EXPECT_EQ(g.current_generation, 0x1122334455667788u);
    EXPECT_EQ(g.history, (std::vector<std::uint64_t>{7, 8}));
    ASSERT_EQ(g.exports.size(), 2u);
    EXPECT_EQ(g.exports[0].size, 1ull << 33);
    EXPECT_EQ(g.exports[1].name, "disk1");
}

TEST(PeerProtocol, WriteRoundTripAndScatterGatherHeader) {
    const Bytes data = data_of(4096, 1);
    const Range range{1, 1ull << 40, 4096};
    const Bytes whole = frame({5, Write{range, true, data}});
    Bytes split;
    encode_write_header(5, range, true, split);
    split.insert(split.end(), data.begin(), data.end());
    EXPECT_EQ(whole, split);
    FrameDecoder d;
    const Message got = decode_one(d, whole);
    const auto& w = std::get<Write>(got.body);
    EXPECT_EQ(w.range.export_index, 1u);
    EXPECT_EQ(w.range.offset, 1ull << 40);
    EXPECT_TRUE(w.fua);
    ASSERT_EQ(w.data.size(), data.size());
    EXPECT_EQ(std::memcmp(w.data.data(), data.data(), data.size()), 0);
}

TEST(PeerProtocol, EveryOtherMessageRoundTrips) {
    const Bytes data = data_of(512, 2);
    const std::vector<Message> messages = {
        {1, WriteZeroes{{0, 4096, 8192}, false, true}},
        {2, Trim{{0, 0, 65536}}},
        {3, Flush{}},
        {4, Ack{static_cast<std::uint32_t>(vmha::errc::io_error)}},
        {5, Ping{}},
        {6, ResyncData{{0, 512, 512}, data}},
        {7, ResyncZeroes{{0, 0, 1u << 20}}},
        {8, State{2, 3, 77}},
        {9, Extents{0, {{0, 4u << 20}, {12u << 20, 8u << 20}}}},
        {10, ChecksumRequest{0, 65536, 1u << 20, 256}},
        {11, ChecksumReply{0, 1u << 20, {1, 2, 3}, 0}},
    };
    Bytes stream;
    for (const auto& m : messages) encode(m, stream);
    FrameDecoder d;
    // Feed one byte at a time: framing must not depend on how the socket splits the stream.
    std::vector<Message> got;
    for (const auto b : stream) {
        d.feed(ByteView(&b, 1));
        while (true) {
            auto r = d.next();
            ASSERT_TRUE(r) << r.error().message;
            if (!r->has_value()) break;
            got.push_back(std::move(**r));
            // Views must be checked before the next feed().
            if (auto* rd = std::get_if<ResyncData>(&got.back().body)) {
                EXPECT_EQ(std::memcmp(rd->data.data(), data.data(), data.size()), 0);
            }
        }
    }
    ASSERT_EQ(got.size(), messages.size());
    for (std::size_t i = 0; i < got.size(); ++i) {
        EXPECT_EQ(got[i].cookie, messages[i].cookie);
        EXPECT_EQ(type_of(got[i].body), type_of(messages[i].body));
    }
    EXPECT_TRUE(std::get<WriteZeroes>(got[0].body).may_trim);
    EXPECT_EQ(std::get<Ack>(got[3].body).status, static_cast<std::uint32_t>(vmha::errc::io_error));
    EXPECT_EQ(std::get<State>(got[7].body).current_generation, 77u);
    EXPECT_EQ(std::get<Extents>(got[8].body).ranges.at(1).first, 12u << 20);
    EXPECT_EQ(std::get<ChecksumRequest>(got[9].body).count, 256u);
    EXPECT_EQ(std::get<ChecksumReply>(got[10].body).checksums, (std::vector<std::uint64_t>{1, 2, 3}));
    EXPECT_EQ(d.buffered(), 0u);
}

TEST(PeerProtocol, MalformedHeadersAreRefusedWithAReason) {
    Bytes f = frame({1, Flush{}});
    Bytes bad = f;
    bad[0] = std::byte{0};
    EXPECT_EQ(error_of(bad), "bad frame magic 0x00484131 (expected 0x76484131)");
    bad = f;
    bad[5] = std::byte{2};
    EXPECT_EQ(error_of(bad),
              "peer speaks replication protocol version 2, this imagesyncd speaks version 1");
    bad = f;
    bad[7] = std::byte{1};
    EXPECT_EQ(error_of(bad), "frame has reserved bits set (flags 0x0001)");
    bad = f;
    bad[9] = std::byte{99};
    EXPECT_EQ(error_of(bad), "unknown message type 99");
    bad = f;
    bad[31] = std::byte{1};
    EXPECT_EQ(error_of(bad), "frame has reserved bits set (flags 0x0000)");
}

TEST(PeerProtocol, LengthsAreCheckedBeforeAllocating) {
    // A WRITE header that announces almost 4 GiB: refused from the header alone.
    Bytes f;
    encode_write_header(1, {0, 0, 0xffffffe0u}, false, f);
    EXPECT_EQ(error_of(f), "WRITE payload of 4294967284 bytes is over the limit of 33554496");
    // A FLUSH that claims a payload.
    Bytes g = frame({1, Flush{}});
    g[15] = std::byte{4};
    EXPECT_EQ(error_of(g), "FLUSH payload is 4 bytes; it must be 0");
}

TEST(PeerProtocol, PayloadInconsistenciesAreRefused) {
    const Bytes data = data_of(100, 3);
    Bytes f = frame({1, Write{{0, 0, 100}, false, data}});
    f[header_size + 19] = std::byte{99};  // range.length's last byte: 100 -> 99
    EXPECT_EQ(error_of(f), "WRITE says 99 data bytes but carries 100");
    Bytes w = frame({1, WriteZeroes{{0, 0xffffffffffffff00ull, 0x1000}, false, false}});
    EXPECT_EQ(error_of(w),
              "WRITE_ZEROES at offset 18446744073709551360 with length 4096 wraps around");
    Bytes x = frame({1, Extents{0, {{1, 2}}}});
    x[header_size + 7] = std::byte{2};  // count 1 -> 2, payload unchanged
    EXPECT_EQ(error_of(x), "EXTENTS announces 2 ranges in 16 bytes");
    EXPECT_EQ(error_of(frame({1, ChecksumRequest{0, 65536, 4096, 1}})),
              "CHECKSUM_REQUEST for 1 chunk(s) of 65536 bytes at offset 4096 is malformed");
    EXPECT_EQ(error_of(frame({1, ChecksumRequest{0, 65536, 0, 5000}})),
              "CHECKSUM_REQUEST for 5000 chunk(s) of 65536 bytes at offset 0 is malformed");
    Bytes t = frame({1, Trim{{0, 0, 4096}}});
    t[32] = std::byte{0x80};  // unknown op flag
    EXPECT_EQ(error_of(t), "TRIM has unknown flags 0x8000 or reserved bits 0x0000");
    Hello h;
    h.module = "m";
    h.node = "n";
    h.role = 3;  // invalid
    h.data_state = 1;
    EXPECT_EQ(error_of(frame({1, h})),
              "HELLO has an invalid role 3, data state 1 or flags 0x0000");
}

TEST(PeerProtocol, TruncatedHelloIsRefusedNotOverread) {
    Hello h;
    h.module = "module";
    h.node = "node";
    h.role = 1;
    h.data_state = 1;
    h.exports = {{"disk0", 1}};
    const Bytes f = frame({1, h});
    // Cut the payload short while keeping the header's length consistent with what is sent.
    for (std::size_t cut = 1; cut < f.size() - header_size; ++cut) {
        Bytes g(f.begin(), f.end() - static_cast<std::ptrdiff_t>(cut));
        const auto len = static_cast<std::uint32_t>(g.size() - header_size);
        g[12] = std::byte(len >> 24);
        g[13] = std::byte(len >> 16);
        g[14] = std::byte(len >> 8);
        g[15] = std::byte(len);
        EXPECT_NE(error_of(g), "ok") << "cut " << cut;
    }
}

TEST(PeerProtocol, HelloSplitBrainTrailerRoundTripsAndIsCheckedLikeTheRest) {
    Hello h;
    h.module = "web1";
    h.node = "hv2";
    h.role = 2;
    h.data_state = 1;
    h.exports = {{"disk0", 1u << 20}};
    // Without the trailer: no bit, no bytes (what a node before the trailer sends).
    {
        FrameDecoder d;
        const Message m = decode_one(d, frame({1, h}));
        const auto& g = std::get<Hello>(m.body);
        EXPECT_FALSE(g.changes.has_value());
        EXPECT_EQ(g.hello_flags & hello_has_changes, 0);
    }
    h.changes = Hello::Changes{12u << 20, SplitBrainPolicy::discard_zero_changes};
    const Bytes f = frame({1, h});
    {
        FrameDecoder d;
        const Message m = decode_one(d, f);
        const auto& g = std::get<Hello>(m.body);
        ASSERT_TRUE(g.changes.has_value());
        EXPECT_EQ(*g.changes, *h.changes);
        EXPECT_NE(g.hello_flags & hello_has_changes, 0);
    }
    // Every cut of the trailer is refused (the bit promises 9 bytes).
    for (std::size_t cut = 1; cut <= 9; ++cut) {
        Bytes g(f.begin(), f.end() - static_cast<std::ptrdiff_t>(cut));
        const auto len = static_cast<std::uint32_t>(g.size() - header_size);
        g[15] = std::byte(len & 0xff);
        g[14] = std::byte(len >> 8);
        EXPECT_NE(error_of(g), "ok") << "cut " << cut;
    }
    // An unknown policy byte is refused with its value.
    Bytes bad = f;
    bad.back() = std::byte{7};
    EXPECT_NE(error_of(bad).find("unknown split-brain policy 7"), std::string::npos) << error_of(bad);
    // An unknown flag bit is still refused.
    Bytes flags = f;
    const std::size_t at = header_size + 1 + h.module.size() + 1 + h.node.size() + 2;
    flags[at] = std::byte{0x80};
    EXPECT_NE(error_of(flags).find("flags"), std::string::npos) << error_of(flags);
}

TEST(PeerProtocol, ADecoderStaysFailed) {
    FrameDecoder d;
    Bytes bad = frame({1, Ping{}});
    bad[0] = std::byte{1};
    d.feed(bad);
    EXPECT_FALSE(d.next());
    d.feed(frame({2, Ping{}}));
    EXPECT_FALSE(d.next());
}
