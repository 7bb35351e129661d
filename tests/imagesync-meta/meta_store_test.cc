// The node metadata file: round trip, atomic replacement, corruption and version checks.
#include <fstream>
#include <iterator>

#include <gtest/gtest.h>
#include <xxhash.h>

#include "meta/meta_store.h"
#include "temp_dir.h"

namespace imagesync::meta {
namespace {

using testing::TempDir;

NodeMeta sample() {
    NodeMeta m = NodeMeta::initial_source(0x1111222233334444);
    m.new_generation_when_alone(0x5555666677778888);
    m.gen.push_history(0x9999aaaabbbbcccc);
    m.promote();
    m.crashed_primary = true;
    m.resync = ResyncKind::bitmap;
    m.resync_cursor = 123456789;
    return m;
}

std::vector<char> read_file(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const std::filesystem::path& p, const std::vector<char>& bytes) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

TEST(MetaStore, MissingFileIsANewNode) {
    TempDir dir;
    MetaStore store(dir.path());
    auto loaded = store.load();
    ASSERT_TRUE(loaded) << loaded.error().message;
    EXPECT_FALSE(loaded->has_value());
}

TEST(MetaStore, RoundTrip) {
    TempDir dir;
    MetaStore store(dir.path());
    ASSERT_TRUE(store.save(sample()));
    auto loaded = store.load();
    ASSERT_TRUE(loaded) << loaded.error().message;
    ASSERT_TRUE(loaded->has_value());
    EXPECT_EQ(**loaded, sample());
    EXPECT_FALSE(std::filesystem::exists(dir.path() / "node.meta.tmp"));
}

TEST(MetaStore, SaveReplacesTheWholeRecord) {
    TempDir dir;
    MetaStore store(dir.path());
    ASSERT_TRUE(store.save(sample()));
    NodeMeta next = sample();
    next.demote_cleanly();
    next.finish_sync_source();
    next.data_state = DataState::Outdated;
    ASSERT_TRUE(store.save(next));
    auto loaded = store.load();
    ASSERT_TRUE(loaded && loaded->has_value());
    EXPECT_EQ(**loaded, next);
    EXPECT_EQ(std::filesystem::file_size(store.path()), kNodeMetaSize);
}

TEST(MetaStore, LeftoverTempFileFromACrashIsHarmless) {
    TempDir dir;
    MetaStore store(dir.path());
    ASSERT_TRUE(store.save(sample()));
    write_file(dir.path() / "node.meta.tmp", {'j', 'u', 'n', 'k'});  // crash before rename
    auto loaded = store.load();
    ASSERT_TRUE(loaded && loaded->has_value());
    EXPECT_EQ(**loaded, sample());
    ASSERT_TRUE(store.save(NodeMeta::just_created()));
}

TEST(MetaStore, EveryFlippedByteIsDetected) {
    const std::vector<std::byte> good = encode_node_meta(sample());
    for (std::size_t i = 0; i < good.size(); ++i) {
        std::vector<std::byte> bad = good;
        bad[i] ^= std::byte{0x01};
        auto decoded = decode_node_meta(bad, "x");
        EXPECT_FALSE(decoded) << "flipping byte " << i << " went unnoticed";
    }
}

TEST(MetaStore, TornFileIsCorruptAndNotReplaced) {
    TempDir dir;
    MetaStore store(dir.path());
    ASSERT_TRUE(store.save(sample()));
    std::vector<char> bytes = read_file(store.path());
    bytes.resize(50);
    write_file(store.path(), bytes);

    auto loaded = store.load();
    ASSERT_FALSE(loaded);
    EXPECT_TRUE(loaded.error().is(vmha::errc::unreadable));
    EXPECT_NE(loaded.error().message.find(store.path().string()), std::string::npos)
        << loaded.error().message;
    EXPECT_NE(loaded.error().message.find("50 bytes"), std::string::npos) << loaded.error().message;

    auto saved = store.save(NodeMeta::just_created());
    ASSERT_FALSE(saved);
    EXPECT_NE(saved.error().message.find("refusing to replace"), std::string::npos)
        << saved.error().message;
    EXPECT_EQ(read_file(store.path()).size(), 50u);  // untouched
}

TEST(MetaStore, BadChecksumIsCorrupt) {
    TempDir dir;
    MetaStore store(dir.path());
    ASSERT_TRUE(store.save(sample()));
    std::vector<char> bytes = read_file(store.path());
    bytes[30] = static_cast<char>(bytes[30] ^ 0x40);  // inside `current`
    write_file(store.path(), bytes);
    auto loaded = store.load();
    ASSERT_FALSE(loaded);
    EXPECT_TRUE(loaded.error().is(vmha::errc::unreadable));
    EXPECT_NE(loaded.error().message.find("checksum"), std::string::npos) << loaded.error().message;
}

TEST(MetaStore, NotAMetadataFile) {
    TempDir dir;
    MetaStore store(dir.path());
    write_file(store.path(), std::vector<char>(96, 'x'));
    auto loaded = store.load();
    ASSERT_FALSE(loaded);
    EXPECT_NE(loaded.error().message.find("magic"), std::string::npos) << loaded.error().message;
}

TEST(MetaStore, NewerVersionIsRefusedAndNotReplaced) {
    TempDir dir;
    MetaStore store(dir.path());
    ASSERT_TRUE(store.save(sample()));
    std::vector<char> bytes = read_file(store.path());
    bytes[8] = 2;  // version 2; a newer writer would also change the layout and checksum
    bytes.resize(200, 0);
    write_file(store.path(), bytes);

    auto loaded = store.load();
    ASSERT_FALSE(loaded);
    EXPECT_TRUE(loaded.error().is(vmha::errc::version_mismatch));
    EXPECT_NE(loaded.error().message.find("version 2"), std::string::npos) << loaded.error().message;
    EXPECT_FALSE(store.save(sample()));
    EXPECT_EQ(read_file(store.path()).size(), 200u);
}

TEST(MetaStore, UnknownFlagsAreAVersionMismatch) {
    std::vector<std::byte> bytes = encode_node_meta(sample());
    bytes[12] = std::byte{0x01};
    // Recompute the checksum, as a newer writer would have.
    auto redo = [&] {
        std::uint64_t h = XXH3_64bits(bytes.data(), 88);
        for (std::size_t i = 0; i < 8; ++i) bytes[88 + i] = static_cast<std::byte>(h >> (8 * i));
    };
    redo();
    auto decoded = decode_node_meta(bytes, "node.meta");
    ASSERT_FALSE(decoded);
    EXPECT_TRUE(decoded.error().is(vmha::errc::version_mismatch)) << decoded.error().message;
}

TEST(MetaStore, MissingDirectoryIsAClearError) {
    MetaStore store("/nonexistent-imagesync-meta-dir");
    auto loaded = store.load();
    ASSERT_FALSE(loaded);  // not mistaken for a new node
    EXPECT_TRUE(loaded.error().is(vmha::errc::not_found));
    EXPECT_NE(loaded.error().message.find("/nonexistent-imagesync-meta-dir"), std::string::npos);
    auto saved = store.save(sample());
    ASSERT_FALSE(saved);
    EXPECT_TRUE(saved.error().is(vmha::errc::not_found)) << saved.error().message;
    EXPECT_NE(saved.error().message.find("/nonexistent-imagesync-meta-dir"), std::string::npos);
    EXPECT_EQ(saved.error().message.find("refusing"), std::string::npos) << saved.error().message;
}

}  // namespace
}  // namespace imagesync::meta
