// The activity log: amortisation, batching, the hot-extent bound, in-flight extents, crash
// recovery (with torn writes and ring wrap-around), failures and file checks.
#include <map>
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "meta/activity_log.h"
#include "meta/fake_meta_file.h"
#include "outcome.h"

namespace imagesync::meta {
namespace {

using testing::GiB;
using testing::KiB;
using testing::MiB;
using testing::Outcome;
constexpr std::uint64_t kExtent = 4 * MiB;


ActivityLogConfig config(std::uint32_t hot = 16, std::uint64_t size = 100 * GiB) {
    return {.export_size = size, .extent_size = static_cast<std::uint32_t>(kExtent), .max_hot_extents = hot};
}

std::unique_ptr<ActivityLog> make(FakeMetaFile& file, ActivityLogConfig c = config()) {
    auto log = ActivityLog::create(file, c);
    if (!log) ADD_FAILURE() << log.error().message;
    return std::move(*log);
}

std::unique_ptr<ActivityLog> reopen(FakeMetaFile& file, ActivityLogConfig c = config()) {
    auto log = ActivityLog::open(file, c);
    if (!log) ADD_FAILURE() << log.error().message;
    return log ? std::move(*log) : nullptr;
}

ByteRange extent(std::uint64_t e) { return {e * kExtent, kExtent}; }

// Begins and ends a write to extent `e`, expecting it to be admitted.
void touch(ActivityLog& log, std::uint64_t e) {
    Outcome o;
    log.begin_write(e * kExtent, 4096, o.callback());
    ASSERT_EQ(o.calls, 1);
    ASSERT_TRUE(o.ok) << o.message;
    log.end_write(e * kExtent, 4096);
}

TEST(ActivityLog, ColdExtentIsLoggedBeforeTheWriteAndHotOneCostsNothing) {
    FakeMetaFile file;
    auto log = make(file);
    file.set_deferred(true);  // the header was written at create
    Outcome first;
    EXPECT_TRUE(log->begin_write(10 * kExtent + 512, 4096, first.callback()));
    EXPECT_EQ(first.calls, 0);
    EXPECT_EQ(file.pending_writes(), 1u);
    ASSERT_TRUE(file.complete_next());
    EXPECT_EQ(first.calls, 1);
    EXPECT_EQ(log->logged_extents(), (std::vector<ByteRange>{extent(10)}));

    const std::size_t writes = file.write_calls();
    Outcome second;
    EXPECT_FALSE(log->begin_write(10 * kExtent + 1 * MiB, 64 * KiB, second.callback()));
    EXPECT_EQ(second.calls, 1);
    EXPECT_TRUE(second.ok);
    EXPECT_EQ(file.write_calls(), writes);  // amortised: no metadata I/O
    log->end_write(10 * kExtent + 512, 4096);
    log->end_write(10 * kExtent + 1 * MiB, 64 * KiB);
    Outcome third;
    EXPECT_FALSE(log->begin_write(10 * kExtent, 4096, third.callback()));  // still hot after end
    EXPECT_EQ(file.write_calls(), writes);
}

TEST(ActivityLog, WriteToAnExtentBeingLoggedWaitsForThatTransaction) {
    FakeMetaFile file;
    auto log = make(file);
    file.set_deferred(true);
    Outcome a, b;
    log->begin_write(0, 4096, a.callback());
    EXPECT_TRUE(log->begin_write(8192, 4096, b.callback()));  // hot in memory, not yet durable
    EXPECT_EQ(b.calls, 0);
    ASSERT_TRUE(file.complete_next());
    EXPECT_EQ(a.calls, 1);
    EXPECT_EQ(b.calls, 1);
}

TEST(ActivityLog, ExtentsArrivingDuringATransactionShareTheNextOne) {
    FakeMetaFile file;
    auto log = make(file);
    file.set_deferred(true);
    std::vector<Outcome> outs(6);
    for (std::size_t i = 0; i < outs.size(); ++i) log->begin_write(i * kExtent, 4096, outs[i].callback());
    EXPECT_EQ(file.pending_writes(), 1u);  // extent 0 only
    ASSERT_TRUE(file.complete_next());
    EXPECT_EQ(outs[0].calls, 1);
    EXPECT_EQ(outs[1].calls, 0);
    EXPECT_EQ(file.pending_writes(), 1u);  // extents 1..5 in one transaction
    ASSERT_TRUE(file.complete_next());
    for (auto& o : outs) EXPECT_EQ(o.calls, 1);
    EXPECT_EQ(log->transactions_written(), 2u);
    EXPECT_EQ(log->logged_extents(), (std::vector<ByteRange>{{0, 6 * kExtent}}));
}

TEST(ActivityLog, MoreThanOneTransactionOfUpdatesIsReleasedTransactionByTransaction) {
    FakeMetaFile file;
    auto log = make(file, config(1024));
    file.set_deferred(true);
    Outcome first;
    log->begin_write(0, 1, first.callback());  // transaction 1 in flight
    std::vector<Outcome> outs(100);            // 64 go in transaction 2, 36 in transaction 3
    for (std::size_t i = 0; i < outs.size(); ++i) {
        log->begin_write((1 + i) * kExtent, 1, outs[i].callback());
    }
    ASSERT_TRUE(file.complete_next());
    EXPECT_EQ(first.calls, 1);
    ASSERT_TRUE(file.complete_next());
    for (std::size_t i = 0; i < 64; ++i) EXPECT_EQ(outs[i].calls, 1) << i;
    for (std::size_t i = 64; i < 100; ++i) EXPECT_EQ(outs[i].calls, 0) << i << " released early";
    ASSERT_TRUE(file.complete_next());
    for (std::size_t i = 64; i < 100; ++i) EXPECT_EQ(outs[i].calls, 1) << i;
    EXPECT_EQ(log->transactions_written(), 3u);
    EXPECT_EQ(log->logged_extents(), (std::vector<ByteRange>{{0, 101 * kExtent}}));
}

TEST(ActivityLog, WriteSpanningTwoExtentsLogsBoth) {
    FakeMetaFile file;
    auto log = make(file);
    Outcome o;
    log->begin_write(3 * kExtent - 4096, 8192, o.callback());
    EXPECT_TRUE(o.ok);
    EXPECT_EQ(log->transactions_written(), 1u);
    EXPECT_EQ(log->logged_extents(), (std::vector<ByteRange>{{2 * kExtent, 2 * kExtent}}));
    EXPECT_TRUE(log->is_hot(2 * kExtent));
    EXPECT_TRUE(log->is_hot(3 * kExtent));
    log->end_write(3 * kExtent - 4096, 8192);
    // Both are now evictable: fill the log and check they go.
    for (std::uint64_t e = 10; e < 10 + 16; ++e) touch(*log, e);
    EXPECT_FALSE(log->is_hot(2 * kExtent));
    EXPECT_FALSE(log->is_hot(3 * kExtent));
}

TEST(ActivityLog, NeverMoreHotExtentsThanConfigured) {
    FakeMetaFile file;
    auto log = make(file, config(16));
    for (std::uint64_t e = 0; e < 200; ++e) {
        touch(*log, (e * 37) % 1000);
        ASSERT_LE(log->hot_extents(), 16u);
        std::uint64_t logged = 0;
        for (const ByteRange& r : log->logged_extents()) logged += r.length / kExtent;
        ASSERT_LE(logged, 16u);
    }
    EXPECT_EQ(log->hot_extents(), 16u);
}

TEST(ActivityLog, EvictsTheLeastRecentlyUsedExtent) {
    FakeMetaFile file;
    auto log = make(file, config(16));
    for (std::uint64_t e = 0; e < 16; ++e) touch(*log, e);
    touch(*log, 0);   // 0 is now the most recently used; 1 the least
    touch(*log, 99);  // evicts 1
    EXPECT_TRUE(log->is_hot(0));
    EXPECT_FALSE(log->is_hot(1 * kExtent));
    EXPECT_TRUE(log->is_hot(99 * kExtent));
}

TEST(ActivityLog, ExtentsWithWritesInFlightAreNeverEvicted) {
    FakeMetaFile file;
    auto log = make(file, config(16));
    std::vector<Outcome> busy(16);
    for (std::uint64_t e = 0; e < 16; ++e) log->begin_write(e * kExtent, 4096, busy[e].callback());
    Outcome blocked;
    EXPECT_TRUE(log->begin_write(50 * kExtent, 4096, blocked.callback()));
    EXPECT_EQ(blocked.calls, 0);
    EXPECT_EQ(log->writes_waiting_for_a_slot(), 1u);
    // A write to a hot extent is not stuck behind it.
    Outcome hot;
    EXPECT_FALSE(log->begin_write(3 * kExtent, 4096, hot.callback()));
    log->end_write(3 * kExtent, 4096);
    EXPECT_EQ(blocked.calls, 0);  // extent 3 still has a write in flight

    log->end_write(7 * kExtent, 4096);  // extent 7 becomes evictable
    EXPECT_EQ(blocked.calls, 1);
    EXPECT_TRUE(blocked.ok);
    EXPECT_FALSE(log->is_hot(7 * kExtent));
    for (std::uint64_t e = 0; e < 16; ++e) {
        if (e != 7) {
            EXPECT_TRUE(log->is_hot(e * kExtent)) << "extent " << e;
        }
    }
    EXPECT_EQ(log->writes_waiting_for_a_slot(), 0u);
}

TEST(ActivityLog, WaitingWritesAreAdmittedInOrder) {
    FakeMetaFile file;
    auto log = make(file, config(16));
    for (std::uint64_t e = 0; e < 16; ++e) log->begin_write(e * kExtent, 1, [](vmha::Status) {});
    std::vector<int> order;
    log->begin_write(100 * kExtent, 2 * kExtent, [&](vmha::Status) { order.push_back(1); });  // 2 new
    log->begin_write(200 * kExtent, 1, [&](vmha::Status) { order.push_back(2); });            // 1 new
    log->end_write(0, 1);  // one slot: not enough for the first, and the second must not jump it
    EXPECT_TRUE(order.empty());
    log->end_write(kExtent, 1);
    EXPECT_EQ(order, (std::vector<int>{1}));
    log->end_write(2 * kExtent, 1);
    EXPECT_EQ(order, (std::vector<int>{1, 2}));
}

TEST(ActivityLog, RecoveredExtentsAfterAFreshCreateAreNone) {
    FakeMetaFile file;
    make(file);
    auto log = reopen(file);
    ASSERT_TRUE(log);
    EXPECT_TRUE(log->logged_extents().empty());
}

// After a crash at any moment, every extent that had a write in flight is recovered, and the
// recovered set is exactly what the log reported as durable just before the crash.
TEST(ActivityLog, RecoveryAfterACrashCoversEveryWriteInFlight) {
    for (unsigned seed = 1; seed <= 90; ++seed) {
        std::mt19937_64 rng(seed);
        FakeMetaFile file;
        const std::uint32_t hot = seed % 3 == 0 ? 1024 : 16;  // 1024 needs two context pages
        const ActivityLogConfig c = config(hot, 64 * GiB);
        auto log = make(file, c);
        file.set_deferred(true);
        std::map<int, ByteRange> started;  // writes whose callback ran and that have not ended
        std::map<int, ByteRange> begun;    // every begun, not ended write
        int next = 0;
        const int steps = std::uniform_int_distribution<int>(50, 2000)(rng);
        const std::uint64_t extents = seed % 2 == 0 ? 40 : 5000;
        for (int i = 0; i < steps; ++i) {
            const auto roll = rng() % 10;
            if (roll < 3) {
                file.complete_next();
            } else if (roll < 6 && !started.empty()) {
                auto it = started.begin();
                std::advance(it, static_cast<long>(rng() % started.size()));
                log->end_write(it->second.offset, it->second.length);
                begun.erase(it->first);
                started.erase(it);
            } else if (begun.size() < hot / 2) {
                const std::uint64_t offset = (rng() % extents) * kExtent + (rng() % 1024) * 4096;
                const std::uint64_t length = 4096 * (1 + rng() % 512);  // up to 2 MiB: may span two
                const int n = next++;
                begun[n] = {offset, length};
                log->begin_write(offset, length, [&started, n, offset, length](vmha::Status st) {
                    ASSERT_TRUE(st.ok());
                    started[n] = {offset, length};
                });
            }
        }
        const std::vector<ByteRange> durable_before = log->logged_extents();
        const auto mode = static_cast<FakeMetaFile::Crash>(seed % 3);
        file.crash(mode);
        log.reset();

        auto recovered = ActivityLog::recover(file);
        ASSERT_TRUE(recovered) << "seed " << seed << ": " << recovered.error().message;
        // Unless a write landed without being reported, recovery finds exactly what the log
        // reported as durable.
        if (mode != FakeMetaFile::Crash::land_oldest) {
            EXPECT_EQ(recovered->extents, durable_before) << "seed " << seed;
        }
        auto covered = [&](std::uint64_t offset) {
            for (const ByteRange& r : recovered->extents) {
                if (offset >= r.offset && offset < r.end()) return true;
            }
            return false;
        };
        for (const auto& [n, r] : started) {
            ASSERT_TRUE(covered(r.offset)) << "seed " << seed << ": write " << n << " at " << r.offset;
            ASSERT_TRUE(covered(r.end() - 1)) << "seed " << seed << ": write " << n << " end";
        }
        auto again = reopen(file, c);
        ASSERT_TRUE(again);
        EXPECT_EQ(again->logged_extents(), recovered->extents);
    }
}

TEST(ActivityLog, RingWrapsAroundAndStillRecovers) {
    FakeMetaFile file;
    auto log = make(file, config(16));
    for (std::uint64_t e = 0; e < 500; ++e) touch(*log, (e * 7919) % 3000);
    EXPECT_GE(log->transactions_written(), 400u);
    const auto before = log->logged_extents();
    auto again = reopen(file);
    ASSERT_TRUE(again);
    EXPECT_EQ(again->logged_extents(), before);
    EXPECT_EQ(again->hot_extents(), 16u);
    // It continues where it stopped, and a second reopen agrees.
    for (std::uint64_t e = 0; e < 30; ++e) touch(*again, 5000 + e);
    const auto after = again->logged_extents();
    auto third = reopen(file);
    ASSERT_TRUE(third);
    EXPECT_EQ(third->logged_extents(), after);
}

TEST(ActivityLog, RecoveredExtentsStartHot) {
    FakeMetaFile file;
    auto log = make(file);
    touch(*log, 5);
    log.reset();
    auto again = reopen(file);
    ASSERT_TRUE(again);
    const std::size_t writes = file.write_calls();
    Outcome o;
    EXPECT_FALSE(again->begin_write(5 * kExtent, 4096, o.callback()));
    EXPECT_EQ(file.write_calls(), writes);
}

TEST(ActivityLog, ResetEmptiesTheLogDurably) {
    FakeMetaFile file;
    auto log = make(file);
    for (std::uint64_t e = 0; e < 5; ++e) touch(*log, e);
    Outcome o;
    log->reset(o.callback());
    EXPECT_TRUE(o.ok);
    EXPECT_TRUE(log->logged_extents().empty());
    EXPECT_EQ(log->hot_extents(), 0u);
    auto again = reopen(file);
    ASSERT_TRUE(again);
    EXPECT_TRUE(again->logged_extents().empty());
    // New transactions after a reset are not confused with the old ones.
    touch(*log, 42);
    auto third = reopen(file);
    ASSERT_TRUE(third);
    EXPECT_EQ(third->logged_extents(), (std::vector<ByteRange>{extent(42)}));
}

TEST(ActivityLog, FailedTransactionFailsItsWritersAndEveryLaterOne) {
    FakeMetaFile file("web1.al");
    auto log = make(file, config(16));
    for (std::uint64_t e = 0; e < 16; ++e) log->begin_write(e * kExtent, 1, [](vmha::Status) {});
    file.set_deferred(true);
    Outcome blocked;
    log->begin_write(100 * kExtent, 1, blocked.callback());
    file.fail_write(1);
    log->end_write(0, 1);  // admits the blocked write, whose transaction fails
    Outcome waiting;
    log->begin_write(100 * kExtent + 4096, 1, waiting.callback());
    ASSERT_TRUE(file.complete_next());
    EXPECT_EQ(blocked.calls, 1);
    EXPECT_FALSE(blocked.ok);
    EXPECT_NE(blocked.message.find("web1.al"), std::string::npos) << blocked.message;
    EXPECT_EQ(waiting.calls, 1);
    EXPECT_FALSE(waiting.ok);
    Outcome later;
    EXPECT_FALSE(log->begin_write(200 * kExtent, 1, later.callback()));
    EXPECT_FALSE(later.ok);
    ASSERT_NE(log->failure(), nullptr);
}

TEST(ActivityLog, OpenWithADifferentConfigurationIsRefusedButRecoverable) {
    FakeMetaFile file("web1.al");
    auto log = make(file, config(16));
    touch(*log, 3);
    auto other = ActivityLog::open(file, config(32));
    ASSERT_FALSE(other);
    EXPECT_TRUE(other.error().is(vmha::errc::invalid_config));
    EXPECT_NE(other.error().message.find("16 hot extents"), std::string::npos) << other.error().message;
    EXPECT_NE(other.error().message.find("32 hot extents"), std::string::npos) << other.error().message;
    auto recovered = ActivityLog::recover(file);
    ASSERT_TRUE(recovered);
    EXPECT_EQ(recovered->config, config(16));
    EXPECT_EQ(recovered->extents, (std::vector<ByteRange>{extent(3)}));
}

TEST(ActivityLog, CorruptHeaderIsReported) {
    FakeMetaFile file("web1.al");
    make(file);
    file.bytes()[17] ^= std::byte{1};
    auto log = ActivityLog::open(file, config());
    ASSERT_FALSE(log);
    EXPECT_TRUE(log.error().is(vmha::errc::unreadable));
    EXPECT_NE(log.error().message.find("web1.al"), std::string::npos) << log.error().message;
}

TEST(ActivityLog, NewerVersionIsReported) {
    FakeMetaFile file("web1.al");
    make(file);
    file.bytes()[8] = std::byte{2};
    auto log = ActivityLog::open(file, config());
    ASSERT_FALSE(log);
    EXPECT_TRUE(log.error().is(vmha::errc::version_mismatch));
}

TEST(ActivityLog, CorruptTransactionIsIgnoredLikeATornOne) {
    FakeMetaFile file;
    auto log = make(file);
    touch(*log, 1);
    touch(*log, 2);  // transaction 2, page 2
    file.bytes()[2 * kPageSize + 100] ^= std::byte{1};
    auto recovered = ActivityLog::recover(file);
    ASSERT_TRUE(recovered);
    EXPECT_EQ(recovered->extents, (std::vector<ByteRange>{extent(1)}));
}

TEST(ActivityLog, RejectsABadConfiguration) {
    FakeMetaFile file;
    auto log = ActivityLog::create(file, {.export_size = 1 * GiB, .extent_size = 3 * 1024 * 1024,
                                          .max_hot_extents = 64});
    ASSERT_FALSE(log);
    EXPECT_TRUE(log.error().is(vmha::errc::invalid_argument));
    EXPECT_NE(log.error().message.find("3145728"), std::string::npos) << log.error().message;
    auto small = ActivityLog::create(file, config(4));
    ASSERT_FALSE(small);
    EXPECT_NE(small.error().message.find("4 hot extents"), std::string::npos) << small.error().message;
}

TEST(ActivityLogDeathTest, EndWithoutBeginIsABug) {
    FakeMetaFile file;
    auto log = make(file);
    EXPECT_DEATH(log->end_write(0, 4096), "without a write in flight");
}

}  // namespace
}  // namespace imagesync::meta
