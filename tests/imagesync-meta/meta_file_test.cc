// BlockingMetaFile and the fake's fault injection.
#include <gtest/gtest.h>

#include "meta/fake_meta_file.h"
#include "meta/meta_file.h"
#include "temp_dir.h"

namespace imagesync::meta {
namespace {

Page page(std::uint64_t index, std::uint8_t fill) {
    return Page{index, std::vector<std::byte>(kPageSize, std::byte{fill})};
}

TEST(BlockingMetaFile, WritesPagesAtTheirOffsets) {
    testing::TempDir dir;
    auto file = BlockingMetaFile::open(dir.path() / "m", true);
    ASSERT_TRUE(file) << file.error().message;
    vmha::Status result = vmha::Error(vmha::errc::internal, "not called");
    std::vector<Page> pages;
    pages.push_back(page(2, 0xab));
    pages.push_back(page(0, 0x11));
    (*file)->write_pages(std::move(pages), [&](vmha::Status st) { result = std::move(st); });
    ASSERT_TRUE(result) << result.error().message;
    auto bytes = (*file)->read(0, 10 * kPageSize);
    ASSERT_TRUE(bytes);
    ASSERT_EQ(bytes->size(), 3 * kPageSize);
    EXPECT_EQ((*bytes)[0], std::byte{0x11});
    EXPECT_EQ((*bytes)[kPageSize], std::byte{0});
    EXPECT_EQ((*bytes)[2 * kPageSize + 5], std::byte{0xab});
}

TEST(BlockingMetaFile, MissingFileWithoutCreateIsNotFound) {
    testing::TempDir dir;
    auto file = BlockingMetaFile::open(dir.path() / "absent", false);
    ASSERT_FALSE(file);
    EXPECT_TRUE(file.error().is(vmha::errc::not_found));
    EXPECT_NE(file.error().message.find("absent"), std::string::npos) << file.error().message;
}

TEST(FakeMetaFile, DeferredWritesCompleteInOrderAndCrashDropsThem) {
    FakeMetaFile file;
    file.set_deferred(true);
    std::vector<int> order;
    std::vector<Page> a;
    a.push_back(page(0, 1));
    std::vector<Page> b;
    b.push_back(page(1, 2));
    file.write_pages(std::move(a), [&](vmha::Status) { order.push_back(1); });
    file.write_pages(std::move(b), [&](vmha::Status) { order.push_back(2); });
    EXPECT_TRUE(file.complete_next());
    EXPECT_EQ(order, (std::vector<int>{1}));
    file.crash();
    EXPECT_FALSE(file.complete_next());
    EXPECT_EQ(file.bytes().size(), kPageSize);  // page 1 never reached the disk
}

TEST(FakeMetaFile, TornWriteLandsHalfAPage) {
    FakeMetaFile file;
    file.set_deferred(true);
    std::vector<Page> a;
    a.push_back(page(0, 7));
    file.write_pages(std::move(a), [](vmha::Status) { FAIL() << "a crashed write completed"; });
    file.crash(FakeMetaFile::Crash::tear_oldest);
    ASSERT_EQ(file.bytes().size(), kPageSize);
    EXPECT_EQ(file.bytes()[kPageSize / 2 - 1], std::byte{7});
    EXPECT_EQ(file.bytes()[kPageSize / 2], std::byte{0});
}

TEST(FakeMetaFile, LandedWriteIsOnDiskWithoutItsCompletion) {
    FakeMetaFile file;
    file.set_deferred(true);
    std::vector<Page> a;
    a.push_back(page(1, 9));
    file.write_pages(std::move(a), [](vmha::Status) { FAIL() << "a crashed write completed"; });
    file.crash(FakeMetaFile::Crash::land_oldest);
    ASSERT_EQ(file.bytes().size(), 2 * kPageSize);
    EXPECT_EQ(file.bytes()[2 * kPageSize - 1], std::byte{9});
}

TEST(FakeMetaFile, FailsTheNthWrite) {
    FakeMetaFile file;
    file.fail_write(2, vmha::errc::no_space);
    std::vector<bool> ok;
    for (int i = 0; i < 3; ++i) {
        std::vector<Page> p;
        p.push_back(page(static_cast<std::uint64_t>(i), 1));
        file.write_pages(std::move(p), [&](vmha::Status st) { ok.push_back(st.ok()); });
    }
    EXPECT_EQ(ok, (std::vector<bool>{true, false, true}));
}

}  // namespace
}  // namespace imagesync::meta
