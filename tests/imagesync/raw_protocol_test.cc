// imagesyncd against hand-made NBD traffic: malformed and out-of-range requests get the right
// errors, bad packets close only their connection, overlapping writes keep arrival order, and
// SIGTERM answers the requests already read before closing.
#include <map>
#include <set>

#include "raw_client.h"

namespace imagesync_test {
namespace {

constexpr std::uint64_t kSize = 1024 * 1024;
constexpr std::uint32_t kEperm = 1, kEinval = 22, kEnospc = 28;

class RawProtocol : public ::testing::Test {
  protected:
    void SetUp() override { start({}); }

    void start(std::vector<std::string> extra) {
        make_zero_file(dir_ / "disk.img", kSize);
        std::vector<std::string> args{"--image", "disk=" + (dir_ / "disk.img").string()};
        args.insert(args.end(), extra.begin(), extra.end());
        daemon_.emplace(dir_, args);
        ASSERT_TRUE(daemon_->wait_ready());
    }

    // A client in transmission phase on "disk".
    std::unique_ptr<RawClient> client(bool structured = false) {
        auto c = std::make_unique<RawClient>(daemon_->socket());
        EXPECT_TRUE(c->connected());
        const auto size = c->open("disk", structured);
        EXPECT_EQ(size, std::optional<std::uint64_t>(kSize));
        return c;
    }

    // The daemon still serves: a fresh client can read.
    void expect_still_serving() {
        auto c = client();
        ASSERT_TRUE(c->request(kRead, 0, 99, 0, 4096));
        auto r = c->simple_reply();
        ASSERT_TRUE(r.has_value()) << "no reply from a new client";
        EXPECT_EQ(r->error, 0U);
        EXPECT_EQ(r->cookie, 99U);
        EXPECT_TRUE(c->recv(4096).has_value());
        EXPECT_TRUE(daemon_->running());
    }

    std::uint32_t error_of(RawClient& c, std::uint64_t cookie) {
        auto r = c.simple_reply();
        EXPECT_TRUE(r.has_value()) << "no reply for cookie " << cookie;
        if (!r) return ~0U;
        EXPECT_EQ(r->cookie, cookie);
        return r->error;
    }

    TempDir dir_;
    std::optional<Daemon> daemon_;
};

TEST_F(RawProtocol, OutOfRangeAndUnknownRequestsGetTheRightErrors) {
    auto c = client();
    // Write beyond the end: ENOSPC, and the payload is consumed (next request still parses).
    ASSERT_TRUE(c->request(kWrite, 0, 1, kSize - 512, 1024, Bytes(1024, 0xee)));
    EXPECT_EQ(error_of(*c, 1), kEnospc);
    ASSERT_TRUE(c->request(kRead, 0, 2, kSize, 512));
    EXPECT_EQ(error_of(*c, 2), kEinval) << "read beyond the end";
    ASSERT_TRUE(c->request(kRead, 0, 3, UINT64_MAX - 100, 512));
    EXPECT_EQ(error_of(*c, 3), kEinval) << "read with a wrapping offset";
    ASSERT_TRUE(c->request(42, 0, 4, 0, 512));
    EXPECT_EQ(error_of(*c, 4), kEinval) << "unknown command";
    ASSERT_TRUE(c->request(kRead, 0, 5, 0, 64U * 1024 * 1024));
    EXPECT_EQ(error_of(*c, 5), kEinval) << "read longer than the maximum payload";
    ASSERT_TRUE(c->request(kRead, 1U << 9, 6, 0, 512));
    EXPECT_EQ(error_of(*c, 6), kEinval) << "unknown command flag";
    ASSERT_TRUE(c->request(kFlush, 0, 7, 4096, 0));
    EXPECT_EQ(error_of(*c, 7), kEinval) << "FLUSH with an offset";
    ASSERT_TRUE(c->request(kTrim, 0, 8, kSize, 4096));
    EXPECT_EQ(error_of(*c, 8), kEinval) << "trim beyond the end";
    ASSERT_TRUE(c->request(kZeroes, 0, 9, kSize - 4096, 8192));
    EXPECT_EQ(error_of(*c, 9), kEnospc) << "write zeroes beyond the end";
    ASSERT_TRUE(c->request(7, 0, 10, 0, 4096));
    EXPECT_EQ(error_of(*c, 10), kEinval) << "BLOCK_STATUS without a meta context";
    ASSERT_TRUE(c->request(kRead, 0, 11, 0, 0));
    EXPECT_EQ(error_of(*c, 11), kEinval) << "zero-length read";
    // The connection still works after all of that.
    ASSERT_TRUE(c->request(kWrite, 0, 12, 0, 512, Bytes(512, 0x61)));
    EXPECT_EQ(error_of(*c, 12), 0U);
    ASSERT_TRUE(c->request(kRead, 0, 13, 0, 512));
    EXPECT_EQ(error_of(*c, 13), 0U);
    auto data = c->recv(512);
    ASSERT_TRUE(data.has_value());
    EXPECT_EQ(*data, Bytes(512, 0x61));
}

TEST_F(RawProtocol, StructuredRepliesCarryDataAndErrorChunks) {
    auto c = client(/*structured=*/true);
    ASSERT_TRUE(c->request(kWrite, 0, 1, 4096, 512, Bytes(512, 0x99)));
    EXPECT_EQ(error_of(*c, 1), 0U);
    ASSERT_TRUE(c->request(kRead, 0, 2, 4096, 512));
    auto chunk = c->chunk();
    ASSERT_TRUE(chunk.has_value());
    EXPECT_EQ(chunk->cookie, 2U);
    EXPECT_EQ(chunk->type, 1) << "OFFSET_DATA";
    EXPECT_EQ(chunk->flags & 1, 1) << "DONE";
    ASSERT_EQ(chunk->payload.size(), 8U + 512U);
    EXPECT_EQ(from_be(chunk->payload, 0, 8), 4096U);
    EXPECT_EQ(Bytes(chunk->payload.begin() + 8, chunk->payload.end()), Bytes(512, 0x99));

    ASSERT_TRUE(c->request(kRead, 0, 3, kSize, 512));
    chunk = c->chunk();
    ASSERT_TRUE(chunk.has_value());
    EXPECT_EQ(chunk->cookie, 3U);
    EXPECT_EQ(chunk->type, 32769) << "ERROR";
    ASSERT_GE(chunk->payload.size(), 6U);
    EXPECT_EQ(from_be(chunk->payload, 0, 4), kEinval);
}

TEST_F(RawProtocol, BadMagicClosesOnlyThatConnection) {
    auto bystander = client();
    auto c = client();
    ASSERT_TRUE(c->request(kRead, 0, 1, 0, 512, {}, 0xdeadbeef));
    EXPECT_TRUE(c->closed_by_server());
    ASSERT_TRUE(bystander->request(kRead, 0, 5, 0, 512));
    EXPECT_EQ(error_of(*bystander, 5), 0U) << "another connection was disturbed";
    EXPECT_TRUE(bystander->recv(512).has_value());
    expect_still_serving();
}

TEST_F(RawProtocol, HugeWritePayloadClosesOnlyThatConnection) {
    auto c = client();
    ASSERT_TRUE(c->request(kWrite, 0, 1, 0, 0xffffffffU));
    EXPECT_TRUE(c->closed_by_server());
    expect_still_serving();
}

TEST_F(RawProtocol, GarbageInsteadOfAHandshakeClosesOnlyThatConnection) {
    RawClient c(daemon_->socket());
    ASSERT_TRUE(c.connected());
    ASSERT_TRUE(c.recv(18).has_value());
    ASSERT_TRUE(c.send(Bytes{0xff, 0xff, 0xff, 0xff}));  // unknown client flags
    EXPECT_TRUE(c.closed_by_server());

    RawClient d(daemon_->socket());
    ASSERT_TRUE(d.hello());
    Bytes huge;
    be64(huge, kIHaveOpt);
    be32(huge, 7);
    be32(huge, 0x7fffffff);  // absurd option length
    ASSERT_TRUE(d.send(huge));
    EXPECT_TRUE(d.closed_by_server());
    expect_still_serving();
}

TEST_F(RawProtocol, OptionNegotiationAnswersEveryOption) {
    RawClient c(daemon_->socket());
    ASSERT_TRUE(c.hello());
    auto ask = [&c](std::uint32_t opt, const Bytes& data) {
        EXPECT_TRUE(c.option(opt, data));
        auto r = c.option_reply();
        EXPECT_TRUE(r.has_value());
        return r ? r->type : 0U;
    };
    constexpr std::uint32_t kErr = 1U << 31;
    EXPECT_EQ(ask(5, {}), kErr + 2) << "STARTTLS -> ERR_POLICY";
    EXPECT_EQ(ask(4242, {1, 2, 3}), kErr + 1) << "unknown option -> ERR_UNSUP";
    EXPECT_EQ(ask(11, {}), kErr + 1) << "EXTENDED_HEADERS -> ERR_UNSUP";
    EXPECT_EQ(ask(3, {1}), kErr + 3) << "LIST with data -> ERR_INVALID";
    Bytes go;
    be32(go, 7);
    for (char ch : std::string("missing")) go.push_back(static_cast<unsigned char>(ch));
    be16(go, 0);
    EXPECT_EQ(ask(7, go), kErr + 6) << "GO for an unknown export -> ERR_UNKNOWN";
    Bytes truncated{0, 0, 0, 50, 'x'};
    EXPECT_EQ(ask(7, truncated), kErr + 3) << "GO with a cut-off name -> ERR_INVALID";
    Bytes meta;
    be32(meta, 4);
    for (char ch : std::string("disk")) meta.push_back(static_cast<unsigned char>(ch));
    be32(meta, 0);
    EXPECT_EQ(ask(10, meta), kErr + 3) << "SET_META_CONTEXT before STRUCTURED_REPLY";
    // LIST: one SERVER reply then ACK.
    ASSERT_TRUE(c.option(3, {}));
    auto server = c.option_reply();
    ASSERT_TRUE(server.has_value());
    EXPECT_EQ(server->type, 2U);
    auto ack = c.option_reply();
    ASSERT_TRUE(ack.has_value());
    EXPECT_EQ(ack->type, 1U);
    // ABORT: ACK, then the server closes.
    EXPECT_EQ(ask(2, {}), 1U);
    EXPECT_TRUE(c.closed_by_server());
}

TEST_F(RawProtocol, ManyRequestsInFlightAreAllAnswered) {
    auto c = client();
    constexpr int kCount = 200;  // more than the per-connection in-flight limit
    Bytes burst;
    for (int i = 0; i < kCount; ++i) {
        Bytes payload(4096, static_cast<unsigned char>(i));
        be32(burst, kRequestMagic);
        be16(burst, 0);
        be16(burst, kWrite);
        be64(burst, 1000 + static_cast<std::uint64_t>(i));
        be64(burst, static_cast<std::uint64_t>(i % 64) * 8192);
        be32(burst, 4096);
        burst.insert(burst.end(), payload.begin(), payload.end());
    }
    ASSERT_TRUE(c->send(burst));
    std::vector<bool> seen(kCount, false);
    for (int i = 0; i < kCount; ++i) {
        auto r = c->simple_reply();
        ASSERT_TRUE(r.has_value()) << "reply " << i << " missing";
        EXPECT_EQ(r->error, 0U);
        ASSERT_GE(r->cookie, 1000U);
        ASSERT_LT(r->cookie, 1000U + kCount);
        EXPECT_FALSE(seen[r->cookie - 1000]) << "cookie answered twice";
        seen[r->cookie - 1000] = true;
    }
}

TEST_F(RawProtocol, OverlappingWritesApplyInArrivalOrder) {
    // 64 pipelined writes of different lengths over the same start: the last one to arrive
    // must win wherever it covers, the one before it beyond that, and so on.
    auto c = client();
    constexpr int kCount = 64;
    Bytes burst;
    for (int i = 0; i < kCount; ++i) {
        const std::uint32_t length = 65536U - static_cast<std::uint32_t>(i) * 512U;
        be32(burst, kRequestMagic);
        be16(burst, 0);
        be16(burst, kWrite);
        be64(burst, static_cast<std::uint64_t>(i));
        be64(burst, 0);
        be32(burst, length);
        burst.insert(burst.end(), length, static_cast<unsigned char>(i + 1));
    }
    ASSERT_TRUE(c->send(burst));
    for (int i = 0; i < kCount; ++i) ASSERT_TRUE(c->simple_reply().has_value());
    ASSERT_TRUE(c->request(kRead, 0, 500, 0, 65536));
    EXPECT_EQ(error_of(*c, 500), 0U);
    auto data = c->recv(65536);
    ASSERT_TRUE(data.has_value());
    for (int i = 0; i < kCount; ++i) {
        // The last byte of write i is covered by no later (shorter) write.
        const std::size_t at = 65536U - static_cast<std::size_t>(i) * 512U - 1;
        ASSERT_EQ((*data)[at], static_cast<unsigned char>(i + 1)) << "byte " << at;
    }
}

TEST_F(RawProtocol, RepliesCompletingOutOfOrderAreGatheredWithoutMixingUp) {
    // One burst of reads of very different lengths (structured replies with data), writes,
    // a flush and a refused request, sent in fragments that split headers and payloads at odd
    // places: small operations complete before large ones, so replies come back out of order
    // and several go out in one gathered write. Every cookie must be answered exactly once,
    // with a well-formed reply and the right data.
    auto c = client(true);
    // A known pattern first: byte at offset o is (o / 512) * 7 + 1, modulo 256.
    auto pattern = [](std::uint64_t offset) {
        return static_cast<unsigned char>((offset / 512) * 7 + 1);
    };
    constexpr std::uint64_t kPatternBytes = 512 * 1024;
    Bytes fill(kPatternBytes);
    for (std::uint64_t o = 0; o < kPatternBytes; ++o) fill[o] = pattern(o);
    ASSERT_TRUE(c->request(kWrite, 0, 1, 0, static_cast<std::uint32_t>(kPatternBytes), fill));
    ASSERT_EQ(error_of(*c, 1), 0U);

    struct Sent {
        std::uint16_t type;
        std::uint64_t offset;
        std::uint32_t length;
    };
    std::map<std::uint64_t, Sent> sent;
    Bytes burst;
    std::uint64_t cookie = 100;
    auto add = [&](std::uint16_t type, std::uint64_t offset, std::uint32_t length) {
        be32(burst, kRequestMagic);
        be16(burst, 0);
        be16(burst, type);
        be64(burst, cookie);
        be64(burst, offset);
        be32(burst, length);
        if (type == kWrite) burst.insert(burst.end(), length, static_cast<unsigned char>(cookie));
        sent[cookie++] = Sent{type, offset, length};
    };
    const std::uint32_t lengths[] = {512, 256 * 1024, 4096, 1, 131072, 512, 65536, 3000};
    for (int round = 0; round < 6; ++round) {
        for (const std::uint32_t length : lengths) {
            const std::uint64_t offset = (static_cast<std::uint64_t>(round) * 40960 + length) %
                                         (kPatternBytes - length);
            add(kRead, offset, length);
        }
        // Writes beyond the pattern, each to its own range.
        add(kWrite, kPatternBytes + static_cast<std::uint64_t>(round) * 8192, 4096);
        add(kWrite, kPatternBytes + static_cast<std::uint64_t>(round) * 8192 + 4096, 700);
    }
    add(kFlush, 0, 0);
    add(kRead, kSize, 4096);  // beyond the end: an error chunk
    // Fragments of 1 to 2999 bytes, each its own send.
    std::size_t at = 0;
    for (std::size_t i = 1; at < burst.size(); ++i) {
        const std::size_t n = std::min(burst.size() - at, (i * 677) % 2999 + 1);
        ASSERT_TRUE(c->send(Bytes(burst.begin() + static_cast<std::ptrdiff_t>(at),
                                  burst.begin() + static_cast<std::ptrdiff_t>(at + n))));
        at += n;
    }

    std::vector<std::uint64_t> order;
    while (order.size() < sent.size()) {
        auto magic = c->recv(4);
        ASSERT_TRUE(magic.has_value()) << "replies stopped after " << order.size();
        const auto m = static_cast<std::uint32_t>(from_be(*magic, 0, 4));
        if (m == kSimpleReplyMagic) {
            auto rest = c->recv(12);
            ASSERT_TRUE(rest.has_value());
            const std::uint64_t k = from_be(*rest, 4, 8);
            ASSERT_EQ(sent.count(k), 1U) << "unknown cookie " << k;
            EXPECT_EQ(from_be(*rest, 0, 4), 0U) << "cookie " << k;
            EXPECT_NE(sent[k].type, kRead) << "a structured read got a simple reply";
            order.push_back(k);
            continue;
        }
        ASSERT_EQ(m, kStructuredReplyMagic) << "reply " << order.size() << " is not well formed";
        auto rest = c->recv(16);
        ASSERT_TRUE(rest.has_value());
        const auto type = static_cast<std::uint16_t>(from_be(*rest, 2, 2));
        const std::uint64_t k = from_be(*rest, 4, 8);
        auto payload = c->recv(static_cast<std::size_t>(from_be(*rest, 12, 4)));
        ASSERT_TRUE(payload.has_value());
        ASSERT_EQ(sent.count(k), 1U) << "unknown cookie " << k;
        const Sent& r = sent[k];
        ASSERT_EQ(r.type, kRead);
        order.push_back(k);
        if (r.offset >= kSize) {
            EXPECT_NE(type & 0x8000, 0) << "a read beyond the end got no error chunk";
            continue;
        }
        ASSERT_EQ(type, 1) << "OFFSET_DATA expected for cookie " << k;  // with the DONE flag
        ASSERT_EQ(payload->size(), 8U + r.length);
        EXPECT_EQ(from_be(*payload, 0, 8), r.offset);
        for (std::uint32_t i = 0; i < r.length; ++i) {
            ASSERT_EQ((*payload)[8 + i], pattern(r.offset + i))
                << "cookie " << k << " byte " << i;
        }
    }
    std::set<std::uint64_t> unique(order.begin(), order.end());
    EXPECT_EQ(unique.size(), sent.size()) << "a cookie was answered twice";
    // The writes landed where they were sent.
    for (const auto& [k, r] : sent) {
        if (r.type != kWrite) continue;
        ASSERT_TRUE(c->request(kRead, 0, 9000 + k, r.offset, r.length));
        auto chunk = c->chunk();
        ASSERT_TRUE(chunk.has_value());
        ASSERT_EQ(chunk->payload.size(), 8U + r.length);
        EXPECT_EQ(chunk->payload[8], static_cast<unsigned char>(k));
        EXPECT_EQ(chunk->payload.back(), static_cast<unsigned char>(k));
    }
    EXPECT_TRUE(daemon_->running());
}

TEST_F(RawProtocol, SecondaryAnswersWritesWithEperm) {
    daemon_.reset();
    start({"--role", "secondary"});
    auto c = client();
    EXPECT_NE(c->flags & 2, 0) << "READ_ONLY not advertised";
    ASSERT_TRUE(c->request(kWrite, 0, 1, 0, 512, Bytes(512, 1)));
    EXPECT_EQ(error_of(*c, 1), kEperm);
    ASSERT_TRUE(c->request(kTrim, 0, 2, 0, 512));
    EXPECT_EQ(error_of(*c, 2), kEperm);
    ASSERT_TRUE(c->request(kZeroes, 0, 3, 0, 512));
    EXPECT_EQ(error_of(*c, 3), kEperm);
    ASSERT_TRUE(c->request(kRead, 0, 4, 0, 512));
    EXPECT_EQ(error_of(*c, 4), 0U);
    EXPECT_EQ(c->recv(512), std::optional<Bytes>(Bytes(512, 0)));
}

TEST_F(RawProtocol, SigtermAnswersRequestsAlreadyReadThenCloses) {
    auto c = client();
    constexpr int kCount = 32;
    Bytes burst;
    for (int i = 0; i < kCount; ++i) {
        be32(burst, kRequestMagic);
        be16(burst, 0);
        be16(burst, kWrite);
        be64(burst, static_cast<std::uint64_t>(i));
        be64(burst, static_cast<std::uint64_t>(i) * 16384);
        be32(burst, 16384);
        burst.insert(burst.end(), 16384, static_cast<unsigned char>(0x80 + i));
    }
    ASSERT_TRUE(c->send(burst));
    // Wait for the first reply so the daemon is surely mid-burst, then stop it.
    auto first = c->simple_reply();
    ASSERT_TRUE(first.has_value());
    EXPECT_EQ(first->error, 0U);
    ::kill(daemon_->pid(), SIGTERM);
    std::vector<std::uint64_t> answered{first->cookie};
    for (;;) {
        auto r = c->simple_reply();
        if (!r) break;  // the daemon closed the connection
        EXPECT_EQ(r->error, 0U) << "a request was answered with an error (ESHUTDOWN?)";
        answered.push_back(r->cookie);
    }
    EXPECT_EQ(daemon_->wait_exit(std::chrono::seconds(20)), std::optional<int>(0));
    const std::string image = read_file(dir_ / "disk.img");
    for (const std::uint64_t cookie : answered) {
        ASSERT_LT(cookie, static_cast<std::uint64_t>(kCount));
        EXPECT_EQ(static_cast<unsigned char>(image[cookie * 16384]), 0x80 + cookie)
            << "write " << cookie << " was answered but is not in the file";
    }
}

}  // namespace
}  // namespace imagesync_test
