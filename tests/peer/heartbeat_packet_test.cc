#include <gtest/gtest.h>

#include "heartbeat_packet.h"

namespace vmha::peer::detail {
namespace {

HeartbeatKey key(std::uint8_t fill, std::uint64_t session) {
    HeartbeatKey k;
    k.key.fill(fill);
    k.session = session;
    return k;
}

std::vector<std::uint8_t> packet(std::uint64_t sequence, const HeartbeatKey& k = key(7, 42)) {
    return seal_heartbeat({k.session, sequence, "web1", "hv1", "lan"}, k);
}

Status open(const std::vector<std::uint8_t>& bytes, std::uint64_t& last, const HeartbeatKey& k = key(7, 42)) {
    return open_heartbeat(bytes, k, "web1", "hv1", "lan", last);
}

TEST(HeartbeatPacket, RoundTripAdvancesTheSequence) {
    std::uint64_t last = 0;
    ASSERT_TRUE(open(packet(1), last));
    EXPECT_EQ(last, 1u);
    ASSERT_TRUE(open(packet(5), last));  // gaps are fine (lost packets)
    EXPECT_EQ(last, 5u);
}

TEST(HeartbeatPacket, ReplayedAndOlderPacketsAreRejected) {
    std::uint64_t last = 0;
    const auto first = packet(1);
    const auto second = packet(2);
    ASSERT_TRUE(open(first, last));
    ASSERT_TRUE(open(second, last));
    for (const auto* bytes : {&first, &second}) {
        Status st = open(*bytes, last);
        ASSERT_FALSE(st);
        EXPECT_NE(st.error().message.find("replayed"), std::string::npos) << st.error().message;
    }
    EXPECT_EQ(last, 2u);
}

TEST(HeartbeatPacket, EveryFlippedByteIsRejected) {
    const auto good = packet(3);
    for (std::size_t i = 0; i < good.size(); ++i) {
        auto bad = good;
        bad[i] ^= 0x20;
        std::uint64_t last = 0;
        EXPECT_FALSE(open(bad, last)) << "byte " << i;
        EXPECT_EQ(last, 0u);
    }
}

TEST(HeartbeatPacket, WrongKeyOrSessionIsRejected) {
    std::uint64_t last = 0;
    Status st = open(packet(1, key(8, 42)), last);  // forged with another key, right session
    ASSERT_FALSE(st);
    EXPECT_NE(st.error().message.find("HMAC"), std::string::npos) << st.error().message;
    st = open(packet(1, key(7, 43)), last);  // an earlier session's packet
    ASSERT_FALSE(st);
    EXPECT_NE(st.error().message.find("session"), std::string::npos) << st.error().message;
}

TEST(HeartbeatPacket, PacketsForAnotherModuleSenderOrPathAreRejected) {
    const auto k = key(7, 42);
    std::uint64_t last = 0;
    for (const HeartbeatFields& fields : {HeartbeatFields{42, 1, "db1", "hv1", "lan"},
                                          HeartbeatFields{42, 1, "web1", "hv2", "lan"},
                                          HeartbeatFields{42, 1, "web1", "hv1", "backup"}}) {
        Status st = open(seal_heartbeat(fields, k), last);
        ASSERT_FALSE(st);
        EXPECT_TRUE(st.error().is(errc::peer_mismatch)) << st.error().message;
    }
}

TEST(HeartbeatPacket, TruncatedOrOversizePacketsAreRejected) {
    const auto good = packet(1);
    std::uint64_t last = 0;
    for (std::size_t n = 0; n < good.size(); ++n) {
        std::vector<std::uint8_t> cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n));
        EXPECT_FALSE(open(cut, last)) << n << " bytes";
    }
    std::vector<std::uint8_t> huge(max_heartbeat_size + 1, 0);
    EXPECT_FALSE(open(huge, last));
}

}  // namespace
}  // namespace vmha::peer::detail
