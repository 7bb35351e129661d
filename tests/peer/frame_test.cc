#include <gtest/gtest.h>

#include "frame.h"

namespace vmha::peer::detail {
namespace {

std::span<const std::uint8_t> header_of(const std::vector<std::uint8_t>& bytes) {
    return std::span(bytes).first(frame_header_size);
}

TEST(Frame, RoundTrip) {
    const nlohmann::json payload = {{"state", "PRIM"}, {"generation", 7}};
    const auto bytes = encode_frame(FrameType::message, payload);
    auto header = decode_frame_header(header_of(bytes));
    ASSERT_TRUE(header) << header.error().message;
    EXPECT_EQ(header->type, FrameType::message);
    ASSERT_EQ(header->length, bytes.size() - frame_header_size);
    auto json = decode_frame_payload(header->type, std::span(bytes).subspan(frame_header_size));
    ASSERT_TRUE(json) << json.error().message;
    EXPECT_EQ(*json, payload);
}

TEST(Frame, BadMagicIsRefused) {
    auto bytes = encode_frame(FrameType::ping, nlohmann::json::object());
    bytes[0] ^= 0x01;
    auto header = decode_frame_header(header_of(bytes));
    ASSERT_FALSE(header);
    EXPECT_TRUE(header.error().is(errc::protocol_error));
    EXPECT_NE(header.error().message.find("magic"), std::string::npos) << header.error().message;
}

TEST(Frame, OtherVersionIsRefused) {
    auto bytes = encode_frame(FrameType::ping, nlohmann::json::object());
    bytes[4] = 2;
    auto header = decode_frame_header(header_of(bytes));
    ASSERT_FALSE(header);
    EXPECT_TRUE(header.error().is(errc::version_mismatch)) << header.error().message;
}

TEST(Frame, ReservedFlagsMustBeZero) {
    for (std::size_t at : {6u, 7u}) {
        auto bytes = encode_frame(FrameType::ping, nlohmann::json::object());
        bytes[at] = 0x80;
        auto header = decode_frame_header(header_of(bytes));
        ASSERT_FALSE(header) << "flag byte " << at;
        EXPECT_NE(header.error().message.find("flags"), std::string::npos) << header.error().message;
    }
}

TEST(Frame, UnknownTypeIsRefused) {
    for (std::uint8_t type : {std::uint8_t{0}, std::uint8_t{5}, std::uint8_t{255}}) {
        auto bytes = encode_frame(FrameType::ping, nlohmann::json::object());
        bytes[5] = type;
        EXPECT_FALSE(decode_frame_header(header_of(bytes))) << "type " << int{type};
    }
}

TEST(Frame, OversizeLengthIsRefusedFromTheHeader) {
    auto bytes = encode_frame(FrameType::message, nlohmann::json::object());
    const std::uint32_t length = max_frame_payload + 1;
    bytes[8] = static_cast<std::uint8_t>(length >> 24);
    bytes[9] = static_cast<std::uint8_t>(length >> 16);
    bytes[10] = static_cast<std::uint8_t>(length >> 8);
    bytes[11] = static_cast<std::uint8_t>(length);
    auto header = decode_frame_header(header_of(bytes));
    ASSERT_FALSE(header);
    EXPECT_NE(header.error().message.find("over the limit"), std::string::npos) << header.error().message;
}

TEST(Frame, ShortHeaderIsRefused) {
    const auto bytes = encode_frame(FrameType::ping, nlohmann::json::object());
    EXPECT_FALSE(decode_frame_header(std::span(bytes).first(frame_header_size - 1)));
}

TEST(Frame, PayloadMustBeAJsonObject) {
    for (std::string text : {"[1,2]", "\"text\"", "{\"a\":", ""}) {
        std::vector<std::uint8_t> bytes(text.begin(), text.end());
        EXPECT_FALSE(decode_frame_payload(FrameType::message, bytes)) << text;
    }
}

}  // namespace
}  // namespace vmha::peer::detail
