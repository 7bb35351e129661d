// The dirty map: group commit, durability before acknowledgement, crashes, load checks,
// clearing and ordered iteration.
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "meta/dirty_map.h"
#include "meta/fake_meta_file.h"
#include "outcome.h"
#include "temp_dir.h"

namespace imagesync::meta {
namespace {

using testing::GiB;
using testing::KiB;
using testing::MiB;
using testing::Outcome;
constexpr std::uint32_t kChunk = 64 * KiB;


std::unique_ptr<DirtyMap> make(FakeMetaFile& file, std::uint64_t size = 1 * GiB) {
    auto map = DirtyMap::create(file, size, kChunk);
    if (!map) ADD_FAILURE() << map.error().message;
    return std::move(*map);
}

std::unique_ptr<DirtyMap> reload(FakeMetaFile& file, std::uint64_t size = 1 * GiB) {
    auto map = DirtyMap::load(file, size, kChunk);
    if (!map) ADD_FAILURE() << map.error().message;
    return map ? std::move(*map) : nullptr;
}

TEST(DirtyMap, CreateWritesHeaderAndEveryBitmapPage) {
    FakeMetaFile file;
    auto map = make(file, 1 * GiB);  // 16384 chunks: one bitmap page
    EXPECT_EQ(file.write_calls(), 1u);
    EXPECT_EQ(file.pages_written(), 2u);
    EXPECT_EQ(map->dirty_bytes(), 0u);
    EXPECT_EQ(file.bytes().size(), 2 * kPageSize);
}

TEST(DirtyMap, MarkWaitsForItsBitsToBeDurable) {
    FakeMetaFile file;
    auto map = make(file);
    file.set_deferred(true);
    Outcome out;
    EXPECT_TRUE(map->mark(100 * KiB, 8 * KiB, out.callback()));
    EXPECT_EQ(out.calls, 0);  // not acknowledged before the bitmap is on disk
    EXPECT_TRUE(map->is_dirty(64 * KiB));
    ASSERT_TRUE(file.complete_next());
    EXPECT_EQ(out.calls, 1);
    EXPECT_TRUE(out.ok);
}

TEST(DirtyMap, SecondMarkOfADurableChunkDoesNoIO) {
    FakeMetaFile file;
    auto map = make(file);
    Outcome first, second;
    map->mark(0, 4 * KiB, first.callback());
    const std::size_t calls = file.write_calls();
    EXPECT_FALSE(map->mark(8 * KiB, 4 * KiB, second.callback()));  // same chunk, already durable
    EXPECT_EQ(second.calls, 1);
    EXPECT_TRUE(second.ok);
    EXPECT_EQ(file.write_calls(), calls);
}

TEST(DirtyMap, GroupCommitWritesOncePerBatch) {
    FakeMetaFile file;
    auto map = make(file, 16 * GiB);  // 8 bitmap pages
    file.set_deferred(true);
    Outcome a, b, c, d;
    map->mark(0, 4 * KiB, a.callback());  // starts commit 1
    EXPECT_EQ(file.pending_writes(), 1u);
    map->mark(3 * GiB, 4 * KiB, b.callback());  // page 1: waits for commit 2
    map->mark(9 * GiB, 4 * KiB, c.callback());  // page 4: also commit 2
    map->mark(9 * GiB + 64 * KiB, 4 * KiB, d.callback());  // page 4 again
    EXPECT_EQ(file.pending_writes(), 1u);
    ASSERT_TRUE(file.complete_next());
    EXPECT_EQ(a.calls, 1);
    EXPECT_EQ(b.calls + c.calls + d.calls, 0);
    EXPECT_EQ(file.pending_writes(), 1u);  // commit 2, holding both pages
    const std::size_t before = file.pages_written();
    ASSERT_TRUE(file.complete_next());
    EXPECT_EQ(file.pages_written() - before, 2u);
    EXPECT_TRUE(b.ok && c.ok && d.ok);
    EXPECT_EQ(file.pending_writes(), 0u);
}

TEST(DirtyMap, AlreadySetBitWaitsForTheCommitThatCarriesIt) {
    FakeMetaFile file;
    auto map = make(file);
    file.set_deferred(true);
    Outcome first, again_in_flight, other, again_pending;
    map->mark(0, 4 * KiB, first.callback());  // commit 1 in flight with chunk 0
    EXPECT_TRUE(map->mark(0, 4 * KiB, again_in_flight.callback()));
    map->mark(1 * MiB, 4 * KiB, other.callback());  // same page: pending for commit 2
    EXPECT_TRUE(map->mark(1 * MiB, 4 * KiB, again_pending.callback()));
    ASSERT_TRUE(file.complete_next());
    EXPECT_EQ(first.calls, 1);
    EXPECT_EQ(again_in_flight.calls, 1);  // chunk 0 was in commit 1
    EXPECT_EQ(other.calls, 0);
    EXPECT_EQ(again_pending.calls, 0);    // chunk 16 is only in commit 2
    ASSERT_TRUE(file.complete_next());
    EXPECT_EQ(other.calls, 1);
    EXPECT_EQ(again_pending.calls, 1);
}

TEST(DirtyMap, FailedCommitFailsItsWaitersAndEveryLaterMark) {
    FakeMetaFile file("web1-disk0.dirty");
    auto map = make(file);
    file.set_deferred(true);
    file.fail_write(1);
    Outcome a, b, later;
    map->mark(0, 4 * KiB, a.callback());
    map->mark(1 * MiB, 4 * KiB, b.callback());  // waits behind the failing commit
    ASSERT_TRUE(file.complete_next());
    EXPECT_EQ(a.calls, 1);
    EXPECT_FALSE(a.ok);
    EXPECT_EQ(b.calls, 1);
    EXPECT_FALSE(b.ok);
    EXPECT_NE(a.message.find("web1-disk0.dirty"), std::string::npos) << a.message;
    ASSERT_NE(map->failure(), nullptr);
    EXPECT_TRUE(map->failure()->is(vmha::errc::io_error));
    EXPECT_FALSE(map->mark(5 * MiB, 1, later.callback()));
    EXPECT_FALSE(later.ok);
    EXPECT_EQ(file.pending_writes(), 0u);
}

TEST(DirtyMap, FailingTheThirdWrite) {
    FakeMetaFile file;
    auto map = make(file);
    file.fail_write(3);
    std::vector<Outcome> outs(4);
    for (std::size_t i = 0; i < outs.size(); ++i) map->mark(i * MiB, 1, outs[i].callback());
    EXPECT_TRUE(outs[0].ok);
    EXPECT_TRUE(outs[1].ok);
    EXPECT_FALSE(outs[2].ok);
    EXPECT_FALSE(outs[3].ok);
}

TEST(DirtyMap, RangesAreOrderedCoalescedAndClippedToTheExport) {
    FakeMetaFile file;
    const std::uint64_t size = 10 * MiB + 5;  // last chunk is 5 bytes long
    auto map = make(file, size);
    Outcome o;
    map->mark(3 * MiB, 1, o.callback());
    map->mark(1 * MiB + 10, 200 * KiB, o.callback());  // chunks 16..19
    map->mark(1 * MiB + 256 * KiB, 64 * KiB, o.callback());  // chunk 20: adjacent
    map->mark(size - 1, 1, o.callback());
    std::vector<ByteRange> want = {
        {1 * MiB, 320 * KiB}, {3 * MiB, 64 * KiB}, {10 * MiB, 5}};
    EXPECT_EQ(map->dirty_ranges(), want);
    EXPECT_EQ(map->dirty_chunks(), 7u);
    EXPECT_EQ(map->dirty_bytes(), 320 * KiB + 64 * KiB + 5);
    // Resumable from a cursor, bounded in length.
    auto r = map->next_dirty_range(1 * MiB + 64 * KiB, 128 * KiB);
    ASSERT_TRUE(r);
    EXPECT_EQ(*r, (ByteRange{1 * MiB + 64 * KiB, 128 * KiB}));
    r = map->next_dirty_range(4 * MiB);
    ASSERT_TRUE(r);
    EXPECT_EQ(*r, (ByteRange{10 * MiB, 5}));
    EXPECT_FALSE(map->next_dirty_range(size));
}

TEST(DirtyMap, ClearOnlyWholeChunksInsideTheRange) {
    FakeMetaFile file;
    const std::uint64_t size = 1 * MiB + 100;
    auto map = make(file, size);
    Outcome o;
    map->mark(0, size, o.callback());
    EXPECT_EQ(map->dirty_bytes(), size);
    map->clear(10, 128 * KiB);  // covers chunk 1 wholly, chunks 0 and 2 partly
    EXPECT_TRUE(map->is_dirty(0));
    EXPECT_FALSE(map->is_dirty(64 * KiB));
    EXPECT_TRUE(map->is_dirty(128 * KiB));
    map->clear(1 * MiB, 100);  // the short last chunk, up to the export's end
    EXPECT_FALSE(map->is_dirty(1 * MiB));
    EXPECT_EQ(map->dirty_bytes(), 1 * MiB - 64 * KiB);
}

TEST(DirtyMap, ClearIsDurableAfterFlush) {
    FakeMetaFile file;
    auto map = make(file);
    Outcome o, f;
    map->mark(0, 4 * MiB, o.callback());
    map->clear(1 * MiB, 1 * MiB);
    EXPECT_TRUE(map->flush(f.callback()));
    EXPECT_TRUE(f.ok);
    auto loaded = reload(file);
    ASSERT_TRUE(loaded);
    EXPECT_EQ(loaded->dirty_ranges(), (std::vector<ByteRange>{{0, 1 * MiB}, {2 * MiB, 2 * MiB}}));
}

TEST(DirtyMap, MarkAllForAFullResync) {
    FakeMetaFile file;
    const std::uint64_t size = 5 * GiB + 12345;
    auto map = make(file, size);
    Outcome o;
    EXPECT_TRUE(map->mark_all(o.callback()));
    EXPECT_TRUE(o.ok);
    EXPECT_EQ(map->dirty_bytes(), size);
    EXPECT_EQ(map->dirty_ranges(), (std::vector<ByteRange>{{0, size}}));
    auto loaded = reload(file, size);
    ASSERT_TRUE(loaded);
    EXPECT_EQ(loaded->dirty_bytes(), size);
    Outcome again;
    EXPECT_FALSE(map->mark_all(again.callback()));  // nothing new: no I/O
    EXPECT_TRUE(again.ok);
}

TEST(DirtyMap, LoadRoundTrip) {
    FakeMetaFile file;
    auto map = make(file, 100 * GiB);
    Outcome o;
    map->mark(7 * GiB, 3 * MiB, o.callback());
    map->mark(99 * GiB, 1 * GiB, o.callback());
    auto loaded = reload(file, 100 * GiB);
    ASSERT_TRUE(loaded);
    EXPECT_EQ(loaded->dirty_ranges(), map->dirty_ranges());
    EXPECT_EQ(loaded->dirty_bytes(), 3 * MiB + 1 * GiB);
}

TEST(DirtyMap, OneTebibyteTakesTwoMebibytesOfBits) {
    FakeMetaFile file;
    auto map = make(file, 1024 * GiB);
    EXPECT_EQ(map->chunks(), 16u * 1024 * 1024);
    EXPECT_EQ(file.bytes().size(), (512 + 1) * kPageSize);  // header + 2 MiB of bitmap
    Outcome o;
    map->mark(1024 * GiB - 1, 1, o.callback());
    EXPECT_EQ(map->dirty_ranges(), (std::vector<ByteRange>{{1024 * GiB - kChunk, kChunk}}));
}

// The rule the map exists for: after a crash at any moment, every acknowledged mark is found.
TEST(DirtyMap, EveryAcknowledgedMarkSurvivesACrash) {
    for (unsigned seed = 1; seed <= 100; ++seed) {
        std::mt19937_64 rng(seed);
        FakeMetaFile file;
        // Small exports make marks collide on chunks and pages; large ones spread over pages.
        const std::uint64_t size = seed % 2 == 0 ? 8 * GiB : 32 * MiB;
        auto map = make(file, size);
        file.set_deferred(true);
        std::vector<std::uint64_t> acknowledged;  // chunk indexes
        auto steps = std::uniform_int_distribution<int>(20, 300)(rng);
        for (int i = 0; i < steps; ++i) {
            // Some runs complete commits often, others let many marks pile up behind one.
            if (rng() % (seed % 3 == 0 ? 2 : 12) == 0) {
                file.complete_next();
                continue;
            }
            const std::uint64_t offset = (rng() % (size / 4096)) * 4096;
            const std::uint64_t length = std::min<std::uint64_t>(size - offset, 4096 * (1 + rng() % 64));
            map->mark(offset, length, [&acknowledged, offset, length](vmha::Status st) {
                ASSERT_TRUE(st.ok());
                for (std::uint64_t c = offset / kChunk; c <= (offset + length - 1) / kChunk; ++c) {
                    acknowledged.push_back(c);
                }
            });
        }
        file.crash(static_cast<FakeMetaFile::Crash>(seed % 3));
        map.reset();
        auto loaded = reload(file, size);
        ASSERT_TRUE(loaded) << "seed " << seed;
        for (std::uint64_t c : acknowledged) {
            ASSERT_TRUE(loaded->is_dirty(c * kChunk)) << "seed " << seed << ": chunk " << c
                                                      << " was acknowledged but is not dirty";
        }
    }
}

TEST(DirtyMap, LoadRejectsAMismatchedChunkSize) {
    FakeMetaFile file("disk.dirty");
    make(file);
    auto loaded = DirtyMap::load(file, 1 * GiB, 128 * KiB);
    ASSERT_FALSE(loaded);
    EXPECT_TRUE(loaded.error().is(vmha::errc::invalid_config));
    EXPECT_NE(loaded.error().message.find("64 KiB"), std::string::npos) << loaded.error().message;
    EXPECT_NE(loaded.error().message.find("128 KiB"), std::string::npos) << loaded.error().message;
}

TEST(DirtyMap, LoadRejectsAMismatchedExportSize) {
    FakeMetaFile file("disk.dirty");
    make(file);
    auto loaded = DirtyMap::load(file, 2 * GiB, kChunk);
    ASSERT_FALSE(loaded);
    EXPECT_TRUE(loaded.error().is(vmha::errc::invalid_config));
    EXPECT_NE(loaded.error().message.find("1073741824"), std::string::npos) << loaded.error().message;
}

TEST(DirtyMap, LoadRejectsACorruptHeader) {
    FakeMetaFile file("disk.dirty");
    make(file);
    file.bytes()[20] ^= std::byte{0x10};
    auto loaded = DirtyMap::load(file, 1 * GiB, kChunk);
    ASSERT_FALSE(loaded);
    EXPECT_TRUE(loaded.error().is(vmha::errc::unreadable));
    EXPECT_NE(loaded.error().message.find("checksum"), std::string::npos) << loaded.error().message;
}

TEST(DirtyMap, LoadRejectsANewerVersion) {
    FakeMetaFile file("disk.dirty");
    make(file);
    file.bytes()[8] = std::byte{7};
    auto loaded = DirtyMap::load(file, 1 * GiB, kChunk);
    ASSERT_FALSE(loaded);
    EXPECT_TRUE(loaded.error().is(vmha::errc::version_mismatch));
    EXPECT_NE(loaded.error().message.find("version 7"), std::string::npos) << loaded.error().message;
}

TEST(DirtyMap, LoadRejectsATruncatedBitmap) {
    FakeMetaFile file("disk.dirty");
    make(file, 16 * GiB);
    file.bytes().resize(3 * kPageSize);
    auto loaded = DirtyMap::load(file, 16 * GiB, kChunk);
    ASSERT_FALSE(loaded);
    EXPECT_TRUE(loaded.error().is(vmha::errc::unreadable));
    EXPECT_NE(loaded.error().message.find("truncated"), std::string::npos) << loaded.error().message;
}

TEST(DirtyMap, LoadRejectsAnEmptyFile) {
    FakeMetaFile file("disk.dirty");
    auto loaded = DirtyMap::load(file, 1 * GiB, kChunk);
    ASSERT_FALSE(loaded);
    EXPECT_TRUE(loaded.error().is(vmha::errc::unreadable));
}

TEST(DirtyMap, RejectsABadChunkSize) {
    FakeMetaFile file;
    auto map = DirtyMap::create(file, 1 * GiB, 96 * KiB);
    ASSERT_FALSE(map);
    EXPECT_TRUE(map.error().is(vmha::errc::invalid_argument));
    EXPECT_NE(map.error().message.find("98304"), std::string::npos) << map.error().message;
}

TEST(DirtyMapDeathTest, MarkingBeyondTheExportIsABug) {
    FakeMetaFile file;
    auto map = make(file, 1 * MiB);
    EXPECT_DEATH(map->mark(1 * MiB - 1, 2, [](vmha::Status) {}), "beyond the export");
}

TEST(DirtyMap, WorksOnARealFile) {
    testing::TempDir dir;
    const auto path = dir.path() / "disk0.dirty";
    {
        auto file = BlockingMetaFile::open(path, /*create=*/true);
        ASSERT_TRUE(file) << file.error().message;
        auto map = DirtyMap::create(**file, 3 * GiB, kChunk);
        ASSERT_TRUE(map);
        Outcome o;
        EXPECT_TRUE((*map)->mark(2 * GiB, 1 * MiB, o.callback()));
        EXPECT_TRUE(o.ok) << o.message;
    }
    auto file = BlockingMetaFile::open(path, /*create=*/false);
    ASSERT_TRUE(file) << file.error().message;
    auto map = DirtyMap::load(**file, 3 * GiB, kChunk);
    ASSERT_TRUE(map) << map.error().message;
    EXPECT_EQ((*map)->dirty_ranges(), (std::vector<ByteRange>{{2 * GiB, 1 * MiB}}));
}

}  // namespace
}  // namespace imagesync::meta
