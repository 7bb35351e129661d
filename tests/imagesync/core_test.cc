// Unit tests of imagesync-core pieces below the server: export specs, the interval lock, the
// qcow2 size probe, and the io_uring image file (zero fill past the end, allocation map).
#include <cstdint>
#include <cstdlib>
#include <list>
#include <cstring>
#include <new>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <imagesync/server.h>

#include "buffer_pool.h"
#include "daemon.h"
#include "export.h"
#include "image_file.h"
#include "interval_lock.h"
#include "replication/tcp_congestion.h"
#include "uring.h"

namespace imagesync {
namespace {

TEST(ExportSpec, Parsing) {
    auto a = parse_export_spec("vm1-disk0=/var/lib/vm/a.img");
    ASSERT_TRUE(a);
    EXPECT_EQ(a->name, "vm1-disk0");
    EXPECT_EQ(a->path, "/var/lib/vm/a.img");
    EXPECT_FALSE(a->size);
    auto b = parse_export_spec("d=/x.qcow2,size=20G");
    ASSERT_TRUE(b);
    EXPECT_EQ(b->path, "/x.qcow2");
    EXPECT_EQ(b->size, std::optional<std::uint64_t>(20ULL << 30));
    EXPECT_FALSE(parse_export_spec("=/x"));
    EXPECT_FALSE(parse_export_spec("x"));
    EXPECT_FALSE(parse_export_spec("x="));
    EXPECT_FALSE(parse_export_spec("x=/a,size=1000"));
    EXPECT_FALSE(parse_export_spec("x=/a,size=12Q"));
    EXPECT_EQ(parse_size("4k").value(), 4096U);
    EXPECT_EQ(parse_size("1T").value(), 1ULL << 40);
    EXPECT_FALSE(parse_size("99999999999999999999"));
    EXPECT_FALSE(parse_size("16777216T"));
    EXPECT_FALSE(parse_size(""));
    EXPECT_EQ(parse_role("secondary"), std::optional<Role>(Role::secondary));
    EXPECT_FALSE(parse_role("prim"));
}

// The names imagesyncd sets on its link sockets (replication/tcp_congestion.h), checked
// against this kernel: cubic and reno are built into every Linux; "system" sets nothing.
TEST(TcpCongestion, NamesAreCheckedAgainstTheKernelAndSetOnTheSocket) {
    using replication::check_congestion_control;
    EXPECT_TRUE(check_congestion_control("cubic"));
    EXPECT_TRUE(check_congestion_control("reno"));
    EXPECT_TRUE(check_congestion_control("system"));
    for (const char* bad : {"", "Cubic", "a b", "sixteen_letters_", "../cubic"}) {
        auto r = check_congestion_control(bad);
        ASSERT_FALSE(r) << bad;
        EXPECT_TRUE(r.error().is(vmha::errc::invalid_argument)) << bad;
        EXPECT_NE(r.error().message.find("is not a name"), std::string::npos) << r.error().message;
    }
    auto missing = check_congestion_control("no_such_cc");
    ASSERT_FALSE(missing);
    EXPECT_TRUE(missing.error().is(vmha::errc::not_found));
    EXPECT_NE(missing.error().message.find("(available: "), std::string::npos);
    EXPECT_NE(missing.error().message.find("cubic"), std::string::npos) << missing.error().message;

    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    const std::string before = replication::congestion_control(fd);
    EXPECT_FALSE(before.empty());
    EXPECT_TRUE(replication::set_congestion_control(fd, "system"));
    EXPECT_EQ(replication::congestion_control(fd), before);
    for (const char* name : {"reno", "cubic"}) {
        EXPECT_TRUE(replication::set_congestion_control(fd, name));
        EXPECT_EQ(replication::congestion_control(fd), name);
    }
    ::close(fd);
}

TEST(Qcow2Probe, ReadsTheVirtualSize) {
    std::vector<std::byte> header(32);
    const unsigned char magic[] = {'Q', 'F', 'I', 0xfb, 0, 0, 0, 3};
    for (std::size_t i = 0; i < 8; ++i) header[i] = static_cast<std::byte>(magic[i]);
    header[24 + 4] = std::byte{0x04};  // 0x04000000 = 64 MiB
    EXPECT_EQ(qcow2_virtual_size(header), std::optional<std::uint64_t>(64ULL << 20));
    header[0] = std::byte{0};
    EXPECT_FALSE(qcow2_virtual_size(header));
    EXPECT_FALSE(qcow2_virtual_size(std::span<const std::byte>(header).first(16)));
}

TEST(IntervalLock, OverlapsWaitInArrivalOrderOthersRunAtOnce) {
    asio::io_context io;
    IntervalLock lock(io.get_executor());
    auto a = lock.enqueue(0, 4096);
    auto b = lock.enqueue(4096, 4096);  // adjacent, no overlap
    auto c = lock.enqueue(1000, 10);    // overlaps a
    auto d = lock.enqueue(1005, 1);     // overlaps c (and a)
    EXPECT_TRUE(lock.granted(a));
    EXPECT_TRUE(lock.granted(b));
    EXPECT_FALSE(lock.granted(c));
    EXPECT_FALSE(lock.granted(d));
    std::vector<char> order;
    lock.when_granted(c, [&] { order.push_back('c'); });
    lock.when_granted(d, [&] { order.push_back('d'); });
    lock.release(b);
    io.restart();
    io.poll();
    EXPECT_TRUE(order.empty());
    lock.release(a);
    io.restart();
    io.poll();
    EXPECT_EQ(order, std::vector<char>{'c'});
    EXPECT_FALSE(lock.granted(d)) << "d overlaps c, which came first";
    lock.release(c);
    io.restart();
    io.poll();
    EXPECT_EQ(order, (std::vector<char>{'c', 'd'}));
    lock.release(d);
    EXPECT_EQ(lock.size(), 0U);
}

TEST(IntervalLock, AWithdrawnWaitingTicketNeitherRunsNorHoldsUpLaterOnes) {
    asio::io_context io;
    IntervalLock lock(io.get_executor());
    auto a = lock.enqueue(0, 100);
    auto b = lock.enqueue(50, 100);  // waits for a
    bool b_ran = false;
    lock.when_granted(b, [&] { b_ran = true; });
    lock.release(b);  // withdrawn before it was granted (its request failed early)
    auto c = lock.enqueue(120, 10);  // overlapped only b, which is gone
    EXPECT_TRUE(lock.granted(c));
    auto d = lock.enqueue(90, 20);  // overlaps a
    EXPECT_FALSE(lock.granted(d));
    bool d_ran = false;
    lock.when_granted(d, [&] { d_ran = true; });
    lock.release(a);
    io.restart();
    io.poll();
    EXPECT_FALSE(b_ran);
    EXPECT_TRUE(d_ran) << "releasing a grants d, although b was withdrawn meanwhile";
    lock.release(c);
    lock.release(d);
    EXPECT_EQ(lock.size(), 0U);
    // Everything released: a new ticket anywhere is granted at once.
    auto e = lock.enqueue(0, 1000);
    EXPECT_TRUE(lock.granted(e));
    lock.release(e);
}

// Random enqueues and releases (withdrawals included) against the rule itself: a held ticket is
// granted exactly when no earlier held ticket overlaps it, and each waiter runs once, when
// granted.
TEST(IntervalLock, RandomSequencesGrantExactlyWhatNoEarlierHeldTicketOverlaps) {
    asio::io_context io;
    IntervalLock lock(io.get_executor());
    struct Held {
        IntervalLock::Ticket ticket;
        std::uint64_t begin, end;
        int runs = 0;
    };
    std::list<Held> held;  // arrival order
    std::uint64_t seed = 12345;
    auto next = [&seed](std::uint64_t n) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        return (seed >> 33) % n;
    };
    for (int step = 0; step < 5000; ++step) {
        if (held.empty() || (held.size() < 48 && next(2) == 0)) {
            const std::uint64_t begin = next(64) * 8;
            const std::uint64_t length = 1 + next(40);
            held.push_back({lock.enqueue(begin, length), begin, begin + length});
            Held& h = held.back();
            lock.when_granted(h.ticket, [&h] { ++h.runs; });
        } else {
            auto it = held.begin();
            std::advance(it, static_cast<long>(next(held.size())));
            lock.release(it->ticket);
            held.erase(it);
        }
        io.restart();
        io.poll();
        for (auto it = held.begin(); it != held.end(); ++it) {
            bool overlapped = false;
            for (auto e = held.begin(); e != it; ++e) {
                if (e->begin < it->end && it->begin < e->end) overlapped = true;
            }
            ASSERT_EQ(lock.granted(it->ticket), !overlapped) << "step " << step;
            ASSERT_EQ(it->runs, overlapped ? 0 : 1) << "step " << step;
        }
        ASSERT_EQ(lock.size(), held.size());
    }
}

class ImageFileTest : public ::testing::Test {
  protected:
    void SetUp() override {
        auto u = Uring::create(io_, 8);  // small ring: exercises the backlog
        ASSERT_TRUE(u) << u.error().message;
        uring_ = std::move(*u);
        path_ = dir_ / "f.img";
        imagesync_test::write_file(path_, std::string(8192, 'x'));
        // Never a stall, however busy the machine: the tests check which path each I/O takes.
        InlineWriteLimits patient;
        patient.stall = std::chrono::hours(1);
        auto f = ImageFile::open(*uring_, path_, true, patient);
        ASSERT_TRUE(f) << f.error().message;
        file_ = std::move(*f);
    }
    void TearDown() override {
        file_.reset();
        if (uring_) uring_->stop();
    }
    vmha::Status run(const std::function<void(ImageFile::Done)>& start) {
        std::optional<vmha::Status> result;
        start([&](vmha::Status s) { result = std::move(s); });
        while (!result) io_.run_one();
        return std::move(*result);
    }

    imagesync_test::TempDir dir_;
    asio::io_context io_;
    std::unique_ptr<Uring> uring_;
    std::filesystem::path path_;
    std::unique_ptr<ImageFile> file_;
};

TEST_F(ImageFileTest, ReadPastTheEndIsZeroFilledAndWritePastItExtends) {
    std::vector<std::byte> buf(16384, std::byte{0x55});
    ASSERT_TRUE(run([&](auto d) { file_->read(4096, buf, std::move(d)); }));
    EXPECT_EQ(buf[0], std::byte{'x'});
    EXPECT_EQ(buf[4095], std::byte{'x'});
    EXPECT_EQ(buf[4096], std::byte{0});
    EXPECT_EQ(buf[16383], std::byte{0});

    const std::vector<std::byte> data(4096, std::byte{0x7e});
    ASSERT_TRUE(run([&](auto d) { file_->write(1 << 20, data, true, std::move(d)); }));
    EXPECT_EQ(file_->current_size().value(), (1U << 20) + 4096U);
    ASSERT_TRUE(run([&](auto d) { file_->flush(std::move(d)); }));
}

TEST_F(ImageFileTest, ManyConcurrentOperationsOnATinyRing) {
    std::vector<std::vector<std::byte>> blocks;
    for (int i = 0; i < 100; ++i) blocks.emplace_back(512, static_cast<std::byte>(i));
    int done = 0;
    for (int i = 0; i < 100; ++i) {
        file_->write(static_cast<std::uint64_t>(i) * 512, blocks[static_cast<std::size_t>(i)],
                     false, [&](vmha::Status s) {
                         EXPECT_TRUE(s);
                         ++done;
                     });
    }
    while (done < 100) io_.run_one();
    const std::string content = imagesync_test::read_file(path_);
    for (int i = 0; i < 100; ++i) {
        EXPECT_EQ(static_cast<unsigned char>(content[static_cast<std::size_t>(i) * 512]), i);
    }
}

TEST_F(ImageFileTest, ZeroesTrimAndAllocationMap) {
    // Make a 1 MiB file with data only in its first 64 KiB.
    ::truncate(path_.c_str(), 1 << 20);
    const std::vector<std::byte> data(65536, std::byte{1});
    ASSERT_TRUE(run([&](auto d) { file_->write(0, data, false, std::move(d)); }));
    auto map = file_->allocation(0, 2 << 20, 100);
    ASSERT_TRUE(map) << map.error().message;
    ASSERT_GE(map->size(), 2U);
    EXPECT_FALSE(map->front().hole);
    EXPECT_EQ(map->front().length, 65536U);
    EXPECT_TRUE(map->back().hole);
    std::uint64_t total = 0;
    for (const auto& e : *map) total += e.length;
    EXPECT_EQ(total, 2U << 20);
    auto one = file_->allocation(0, 2 << 20, 1);
    ASSERT_TRUE(one);
    EXPECT_EQ(one->size(), 1U);

    ASSERT_TRUE(
        run([&](auto d) { file_->write_zeroes(0, 4096, true, false, false, std::move(d)); }));
    ASSERT_TRUE(
        run([&](auto d) { file_->write_zeroes(4096, 4096, false, true, true, std::move(d)); }));
    ASSERT_TRUE(run([&](auto d) { file_->trim(8192, 4096, false, std::move(d)); }));
    const std::string content = imagesync_test::read_file(path_);
    EXPECT_EQ(content.substr(0, 12288), std::string(12288, '\0'));
    EXPECT_EQ(content[12288], '\1');
}

// Whether the file system under `path` writes to the page cache without blocking (RWF_NOWAIT):
// then inline writes never take the pwrite path that the stall guard watches.
bool has_nowait_buffered_writes(const std::filesystem::path& path) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return false;
    std::vector<std::byte> page(4096, std::byte{'x'});
    iovec iov{page.data(), page.size()};
    const bool ok = ::pwritev2(fd, &iov, 1, 0, RWF_NOWAIT) >= 0 || errno != EOPNOTSUPP;
    ::close(fd);
    return ok;
}

TEST_F(ImageFileTest, SmallAlignedWritesAreCopiedOnTheLoopAndTheRestGoThroughTheRing) {
    const std::vector<std::byte> page(4096, std::byte{'p'});
    const std::vector<std::byte> big(128 * 1024, std::byte{'b'});
    const std::vector<std::byte> odd(512, std::byte{'o'});
    // Inline writes complete through the io_context, never inside write().
    bool answered = false;
    file_->write(4096, page, false, [&](vmha::Status s) {
        EXPECT_TRUE(s);
        answered = true;
    });
    EXPECT_FALSE(answered);
    while (!answered) io_.run_one();
    EXPECT_EQ(file_->write_counts().inline_writes, 1U);
    EXPECT_EQ(file_->write_counts().ring_writes, 0U);

    ASSERT_TRUE(run([&](auto d) { file_->write(8192, big, false, std::move(d)); }));  // too big
    ASSERT_TRUE(run([&](auto d) { file_->write(512, odd, false, std::move(d)); }));  // partial page
    ASSERT_TRUE(run([&](auto d) { file_->write(0, page, true, std::move(d)); }));    // FUA
    EXPECT_EQ(file_->write_counts().inline_writes, 1U);
    EXPECT_EQ(file_->write_counts().ring_writes, 3U);

    const std::string content = imagesync_test::read_file(path_);
    ASSERT_EQ(content.size(), 8192U + big.size());
    EXPECT_EQ(content.substr(0, 4096), std::string(4096, 'p')) << "the FUA write came last";
    EXPECT_EQ(content.substr(4096, 4096), std::string(4096, 'p'));
    EXPECT_EQ(content.substr(8192), std::string(big.size(), 'b'));

    // A write replicated from the peer is copied inline up to its own, larger limit.
    const std::vector<std::byte> peer_big(128 * 1024, std::byte{'r'});
    const std::vector<std::byte> peer_huge(8u << 20, std::byte{'h'});
    ASSERT_TRUE(run([&](auto d) {
        file_->write(8192, peer_big, false, std::move(d), ImageFile::Origin::peer);
    }));
    EXPECT_EQ(file_->write_counts().inline_writes, 2U);
    ASSERT_TRUE(run([&](auto d) {
        file_->write(1u << 20, peer_huge, false, std::move(d), ImageFile::Origin::peer);
    }));
    EXPECT_EQ(file_->write_counts().inline_writes, 2U) << "over peer_max_bytes (4 MiB)";
    EXPECT_EQ(file_->write_counts().ring_writes, 4U);
    const std::string after = imagesync_test::read_file(path_);
    ASSERT_EQ(after.size(), (1U << 20) + peer_huge.size());
    EXPECT_EQ(after.substr(8192, peer_big.size()), std::string(peer_big.size(), 'r'));
    EXPECT_EQ(after.substr(1U << 20), std::string(peer_huge.size(), 'h'));
}

TEST_F(ImageFileTest, ALargeRingWriteGoesInPiecesAndIsAnsweredOnceWhenAllLanded) {
    // 300 000 bytes at an odd offset: three 128 KiB pieces, the last one short.
    std::vector<std::byte> data(300000);
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::byte>(i * 7 + 3);
    int answers = 0;
    std::string content;  // as the file was when the write was answered
    file_->write(100, data, false, [&](vmha::Status s) {
        EXPECT_TRUE(s);
        ++answers;
        content = imagesync_test::read_file(path_);
    });
    while (answers == 0) io_.run_one();
    io_.restart();
    io_.poll();
    EXPECT_EQ(answers, 1);
    EXPECT_EQ(file_->write_counts().ring_writes, 1U) << "one write, whatever its pieces";
    ASSERT_EQ(content.size(), 100U + data.size());
    EXPECT_EQ(content.substr(0, 100), std::string(100, 'x'));
    EXPECT_EQ(0, std::memcmp(content.data() + 100, data.data(), data.size()));
}

// Direct writes ("Direct writes" in image_file.h): none until enable_direct_writes() (an export
// gets it with its first replica sink); then a client's write of at least 256 KiB whose offset,
// length and buffer are page-aligned goes with O_DIRECT, FUA or not; smaller, misaligned and
// peer writes stay buffered. Every byte lands either way.
TEST_F(ImageFileTest, DirectWritesOnceEnabledOnlyForLargeAlignedClientWrites) {
    BufferPool pool;
    Buffer big = pool.take(512 * 1024);  // pool memory is page-aligned
    ASSERT_EQ(reinterpret_cast<std::uintptr_t>(big.data()) % 4096, 0U);
    auto fill = [&](char c) { std::memset(big.data(), c, big.size()); };
    fill('a');
    ASSERT_TRUE(run([&](auto d) { file_->write(0, big.span(), false, std::move(d)); }));
    EXPECT_EQ(file_->write_counts().direct_writes, 0U) << "not enabled yet";

    file_->enable_direct_writes();
    if (!file_->direct_writes()) GTEST_SKIP() << "the file system under /tmp refuses O_DIRECT";
    fill('b');
    ASSERT_TRUE(run([&](auto d) { file_->write(1u << 20, big.span(), false, std::move(d)); }));
    EXPECT_EQ(file_->write_counts().direct_writes, 1U);
    ASSERT_TRUE(run([&](auto d) { file_->write(2u << 20, big.span(), true, std::move(d)); }));
    EXPECT_EQ(file_->write_counts().direct_writes, 2U) << "FUA: O_DIRECT with RWF_DSYNC";

    const std::vector<std::byte> small(128 * 1024, std::byte{'c'});
    ASSERT_TRUE(run([&](auto d) { file_->write(3u << 20, small, false, std::move(d)); }));
    const std::span<const std::byte> shifted(big.data() + 512, 256 * 1024);
    ASSERT_TRUE(run([&](auto d) { file_->write(4u << 20, shifted, false, std::move(d)); }));
    ASSERT_TRUE(run([&](auto d) { file_->write((5u << 20) + 512, big.span(), false, std::move(d)); }));
    ASSERT_TRUE(run([&](auto d) {
        file_->write(6u << 20, big.span(), false, std::move(d), ImageFile::Origin::peer);
    }));
    EXPECT_EQ(file_->write_counts().direct_writes, 2U)
        << "128 KiB, a buffer off its page, an offset off its page, a peer's write: all buffered";

    const std::string content = imagesync_test::read_file(path_);
    const std::size_t half = 512 * 1024;
    ASSERT_EQ(content.size(), (6u << 20) + half);
    EXPECT_EQ(content.substr(0, half), std::string(half, 'a'));
    EXPECT_EQ(content.substr(1u << 20, half), std::string(half, 'b'));
    EXPECT_EQ(content.substr(2u << 20, half), std::string(half, 'b'));
    EXPECT_EQ(content.substr(3u << 20, small.size()), std::string(small.size(), 'c'));
    EXPECT_EQ(content.substr(4u << 20, 256 * 1024), std::string(256 * 1024, 'b'));
    EXPECT_EQ(content.substr((5u << 20) + 512, half), std::string(half, 'b'));
    EXPECT_EQ(content.substr(6u << 20, half), std::string(half, 'b'));
    pool.give(std::move(big));
}

// Reads that bypass the page cache (a resync's, a verify's): O_DIRECT where offset, length and
// buffer are page-aligned, else through the cache; they read what a cached read would (bytes
// still dirty in the cache included), and past the end of the file, zeroes, even when the file
// ends off a page.
TEST_F(ImageFileTest, ReadsThatBypassTheCacheReadWhatACachedReadWould) {
    BufferPool pool;
    Buffer big = pool.take(64 * 1024);
    std::memset(big.data(), 'd', big.size());
    ASSERT_TRUE(run([&](auto d) { file_->write(1u << 20, big.span(), false, std::move(d)); }));
    // Dirty in the cache, not yet written back; then the file ends 100 bytes past a page.
    const std::vector<std::byte> tail(4096 + 100, std::byte{'t'});
    ASSERT_TRUE(run([&](auto d) { file_->write((1u << 20) + 64 * 1024, tail, false, std::move(d)); }));

    Buffer into = pool.take(128 * 1024);
    std::memset(into.data(), 0x55, into.size());
    ASSERT_TRUE(run([&](auto d) {
        file_->read(1u << 20, into.span(), std::move(d), ImageFile::Cache::bypass);
    }));
    const auto direct = file_->write_counts().direct_reads;
    const std::string got(reinterpret_cast<const char*>(into.data()), into.size());
    EXPECT_EQ(got.substr(0, 64 * 1024), std::string(64 * 1024, 'd'));
    EXPECT_EQ(got.substr(64 * 1024, tail.size()), std::string(tail.size(), 't'));
    EXPECT_EQ(got.substr(64 * 1024 + tail.size()), std::string(128 * 1024 - 64 * 1024 - tail.size(), '\0'))
        << "past the end of the file: zeroes";

    // Off a page (offset or buffer): through the cache, and the same bytes.
    std::vector<std::byte> odd(5000, std::byte{0x55});
    ASSERT_TRUE(run([&](auto d) {
        file_->read((1u << 20) + 512, odd, std::move(d), ImageFile::Cache::bypass);
    }));
    EXPECT_EQ(odd.front(), std::byte{'d'});
    EXPECT_EQ(file_->write_counts().direct_reads, direct) << "an unaligned read went direct";
    ASSERT_TRUE(run([&](auto d) { file_->read(0, big.span(), std::move(d)); }));
    EXPECT_EQ(file_->write_counts().direct_reads, direct) << "a client's read bypassed the cache";
    if (direct == 0) GTEST_SKIP() << "the file system under /tmp refuses O_DIRECT";
    EXPECT_EQ(direct, 1U);
    pool.give(std::move(big));
    pool.give(std::move(into));
}

TEST(ImageFileInline, AnInlineWriteThatStallsSendsSmallWritesToTheRingForTheBackoff) {
    imagesync_test::TempDir dir;
    const auto path = dir / "f.img";
    imagesync_test::write_file(path, std::string(65536, 'x'));
    if (has_nowait_buffered_writes(path)) {
        GTEST_SKIP() << "this file system has nonblocking buffered writes: no pwrite to watch";
    }
    asio::io_context io;
    auto uring = Uring::create(io, 8);
    ASSERT_TRUE(uring) << uring.error().message;
    {
        // Every pwrite counts as a stall (the limit is `stall` + 1 us per KiB, here far below
        // zero); the backoff outlasts the test.
        InlineWriteLimits limits;
        limits.stall = std::chrono::microseconds(-1'000'000);
        limits.backoff = std::chrono::hours(1);
        auto f = ImageFile::open(**uring, path, true, limits);
        ASSERT_TRUE(f) << f.error().message;
        const std::vector<std::byte> page(4096, std::byte{'s'});
        for (std::uint64_t i = 0; i < 4; ++i) {
            bool answered = false;
            (*f)->write(i * 4096, page, false, [&](vmha::Status s) {
                EXPECT_TRUE(s);
                answered = true;
            });
            while (!answered) io.run_one();
        }
        EXPECT_EQ((*f)->write_counts().inline_writes, 1U);
        EXPECT_EQ((*f)->write_counts().stalls, 1U);
        EXPECT_EQ((*f)->write_counts().ring_writes, 3U);
        EXPECT_EQ(imagesync_test::read_file(path).substr(0, 16384), std::string(16384, 's'));

        // With max_bytes 0, nothing is copied inline.
        InlineWriteLimits off;
        off.max_bytes = 0;
        auto g = ImageFile::open(**uring, path, true, off);
        ASSERT_TRUE(g);
        bool answered = false;
        (*g)->write(0, page, false, [&](vmha::Status s) {
            EXPECT_TRUE(s);
            answered = true;
        });
        while (!answered) io.run_one();
        EXPECT_EQ((*g)->write_counts().inline_writes, 0U);
        EXPECT_EQ((*g)->write_counts().ring_writes, 1U);
    }
    (*uring)->stop();
}

// A flush after a little writing runs fdatasync on the loop (answered through the io_context,
// never inside flush()); after more than flush_max_dirty, or with it 0, through io_uring; a
// slow one sends the next flushes to io_uring for the backoff.
TEST(ImageFileInline, SmallFlushesRunOnTheLoopLargeOnesAndStalledOnesThroughTheRing) {
    imagesync_test::TempDir dir;
    const auto path = dir / "f.img";
    imagesync_test::write_file(path, std::string(1 << 20, 'x'));
    asio::io_context io;
    auto uring = Uring::create(io, 8);
    ASSERT_TRUE(uring) << uring.error().message;
    {
        // No stall here, however slow the disk or busy the machine: the path is what is tested.
        InlineWriteLimits patient;
        patient.stall = std::chrono::hours(1);
        auto f = ImageFile::open(**uring, path, true, patient);
        ASSERT_TRUE(f) << f.error().message;
        auto write = [&](ImageFile& file, std::uint64_t offset, std::size_t bytes) {
            const std::vector<std::byte> data(bytes, std::byte{'w'});
            bool answered = false;
            file.write(offset, data, false, [&](vmha::Status s) {
                EXPECT_TRUE(s) << s.error().message;
                answered = true;
            });
            while (!answered) io.run_one();
        };
        auto flush = [&](ImageFile& file) {
            bool answered = false;
            file.flush([&](vmha::Status s) {
                EXPECT_TRUE(s) << s.error().message;
                answered = true;
            });
            EXPECT_FALSE(answered) << "a flush is never answered inside flush()";
            while (!answered) io.run_one();
        };
        write(**f, 0, 4096);
        flush(**f);
        EXPECT_EQ((*f)->write_counts().inline_flushes, 1U);
        EXPECT_EQ((*f)->write_counts().ring_flushes, 0U);
        write(**f, 0, 1 << 20);  // the limit (default 1 MiB) included: still inline
        flush(**f);
        EXPECT_EQ((*f)->write_counts().inline_flushes, 2U);
        write(**f, 0, 1 << 20);
        write(**f, 1 << 20, 4096);  // 1 MiB + 4 KiB since the last flush: the ring
        flush(**f);
        EXPECT_EQ((*f)->write_counts().ring_flushes, 1U);
        flush(**f);  // nothing written since: inline again
        EXPECT_EQ((*f)->write_counts().inline_flushes, 3U);
        EXPECT_EQ((*f)->write_counts().stalls, 0U);

        // Every fdatasync counts as slow: the first stalls, the next ones go to the ring.
        InlineWriteLimits slow;
        slow.stall = std::chrono::microseconds(-1);
        slow.backoff = std::chrono::hours(1);
        auto g = ImageFile::open(**uring, path, true, slow);
        ASSERT_TRUE(g);
        for (int i = 0; i < 3; ++i) flush(**g);
        EXPECT_EQ((*g)->write_counts().inline_flushes, 1U);
        EXPECT_EQ((*g)->write_counts().stalls, 1U);
        EXPECT_EQ((*g)->write_counts().ring_flushes, 2U);

        InlineWriteLimits off;
        off.flush_max_dirty = 0;
        auto h = ImageFile::open(**uring, path, true, off);
        ASSERT_TRUE(h);
        flush(**h);
        EXPECT_EQ((*h)->write_counts().inline_flushes, 0U);
        EXPECT_EQ((*h)->write_counts().ring_flushes, 1U);
    }
    (*uring)->stop();
}

// The kernel's flags of the page cache page that holds `offset` of `path` (/proc/kpageflags),
// or nothing where this process may not see page frame numbers (no CAP_SYS_ADMIN).
constexpr std::uint64_t kPageDirty = 1U << 4;  // KPF_DIRTY
std::optional<std::uint64_t> page_flags(const std::filesystem::path& path, std::uint64_t offset) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return std::nullopt;
    void* map = ::mmap(nullptr, 4096, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(offset));
    ::close(fd);
    if (map == MAP_FAILED) return std::nullopt;
    const volatile char touch = *static_cast<const volatile char*>(map);  // map the cached page
    (void)touch;
    std::optional<std::uint64_t> flags;
    std::uint64_t entry = 0;
    const int pagemap = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    const auto at = static_cast<off_t>(reinterpret_cast<std::uintptr_t>(map) / 4096 * 8);
    if (pagemap >= 0 && ::pread(pagemap, &entry, 8, at) == 8) {
        const std::uint64_t pfn = entry & ((1ULL << 55) - 1);
        const int kflags = ::open("/proc/kpageflags", O_RDONLY | O_CLOEXEC);
        std::uint64_t f = 0;
        if ((entry >> 63) != 0 && pfn != 0 && kflags >= 0 &&
            ::pread(kflags, &f, 8, static_cast<off_t>(pfn * 8)) == 8) {
            flags = f;
        }
        if (kflags >= 0) ::close(kflags);
    }
    if (pagemap >= 0) ::close(pagemap);
    ::munmap(map, 4096);
    return flags;
}

// Early write-back: once the client's last two flushes each followed at most
// early_writeback_max bytes, an inline write within that budget starts its write-back after it
// is answered (the page is no longer dirty: under write-back or written); a write past the
// budget, or any write while the client writes more between flushes, is left to the flush.
TEST(ImageFileInline, WritesStartTheirWriteBackOnlyWhileTheClientFlushesAfterLittleData) {
    imagesync_test::TempDir dir;
    const auto path = dir / "f.img";
    imagesync_test::write_file(path, std::string(16u << 20, 'x'));
    asio::io_context io;
    auto uring = Uring::create(io, 8);
    ASSERT_TRUE(uring) << uring.error().message;
    {
        InlineWriteLimits limits;
        limits.stall = std::chrono::hours(1);
        limits.early_writeback_max = 16384;
        auto f = ImageFile::open(**uring, path, true, limits);
        ASSERT_TRUE(f) << f.error().message;
        ImageFile& file = **f;
        const std::vector<std::byte> page(4096, std::byte{'e'});
        // Answered through the io_context; then what it posted (the write-back) runs too.
        auto write = [&](std::uint64_t offset) {
            bool answered = false;
            file.write(offset, page, false, [&](vmha::Status s) {
                EXPECT_TRUE(s) << s.error().message;
                answered = true;
            });
            while (!answered) io.run_one();
            io.restart();
            io.poll();
        };
        auto flush = [&] {
            bool answered = false;
            file.flush([&](vmha::Status s) {
                EXPECT_TRUE(s) << s.error().message;
                answered = true;
            });
            while (!answered) io.run_one();
        };
        auto writebacks = [&] { return file.write_counts().early_writebacks; };

        // The pages whose flags are read lie 2 MiB apart: the page cache writes back whole
        // folios, which can be that large.
        constexpr std::uint64_t kApart = 2u << 20;
        write(0);
        flush();
        write(kApart);  // one small flush so far: not yet
        EXPECT_EQ(writebacks(), 0U);
        const auto left_dirty = page_flags(path, kApart);
        flush();
        // Two small flushes in a row: the next writes, up to 16 KiB, start their write-back.
        for (std::uint64_t i = 2; i < 7; ++i) write(i * kApart);
        EXPECT_EQ(writebacks(), 4U) << "the fifth write is past the 16 KiB budget";
        const auto started = page_flags(path, 2 * kApart);
        const auto past_budget = page_flags(path, 6 * kApart);

        // A write answered inside the call (a lone primary) starts it inside the call too.
        bool answered = false;
        file.flush([&](vmha::Status) { answered = true; });  // 20 KiB since the last: not small
        while (!answered) io.run_one();
        EXPECT_EQ(writebacks(), 4U);
        write(7 * kApart);
        flush();
        write(7 * kApart + 4096);
        flush();  // two small flushes again
        answered = false;
        file.write(
            7 * kApart + 8192, page, false, [&](vmha::Status s) { answered = static_cast<bool>(s); },
            ImageFile::Origin::client, ImageFile::Completion::may_run_inside);
        EXPECT_TRUE(answered);
        EXPECT_EQ(writebacks(), 5U);
        EXPECT_EQ(file.write_counts().stalls, 0U);

        flush();
        const std::string content = imagesync_test::read_file(path);
        std::vector<std::size_t> written;
        for (std::size_t i = 0; i < 8; ++i) written.push_back(i * kApart);
        written.push_back(7 * kApart + 4096);
        written.push_back(7 * kApart + 8192);
        for (std::size_t at : written) {
            EXPECT_EQ(content.substr(at, 4096), std::string(4096, 'e')) << "at " << at;
        }
        EXPECT_EQ(content.substr(4096, 4096), std::string(4096, 'x'));

        // What the kernel says about the pages (where this process may read page flags).
        if (left_dirty && started && past_budget) {
            EXPECT_NE(*left_dirty & kPageDirty, 0U) << "a write without early write-back";
            EXPECT_EQ(*started & kPageDirty, 0U) << "written back or under write-back";
            EXPECT_NE(*past_budget & kPageDirty, 0U) << "past the budget: left to the flush";
        } else {
            std::fprintf(stderr, "page flags not readable here: only the counts were checked\n");
        }

        // 0 turns it off.
        InlineWriteLimits off = limits;
        off.early_writeback_max = 0;
        auto g = ImageFile::open(**uring, path, true, off);
        ASSERT_TRUE(g);
        for (int i = 0; i < 3; ++i) {
            answered = false;
            (*g)->write(0, page, false, [&](vmha::Status) { answered = true; });
            while (!answered) io.run_one();
            io.restart();
            io.poll();
            answered = false;
            (*g)->flush([&](vmha::Status) { answered = true; });
            while (!answered) io.run_one();
        }
        EXPECT_EQ((*g)->write_counts().early_writebacks, 0U);
    }
    (*uring)->stop();
}

// A sink that records what reaches it and completes only when the test says so.
class HeldSink : public ReplicaSink {
  public:
    struct Seen {
        WriteOp::Kind kind;
        std::uint64_t offset;
        std::uint64_t length;
        std::byte first;
        Done done;
    };
    std::string_view name() const override { return "held"; }
    void apply(const WriteOp& op, Done done) override {
        seen.push_back({op.kind, op.offset, op.length,
                        op.data.empty() ? std::byte{0} : op.data.front(), std::move(done)});
    }
    std::vector<Seen> seen;
};

// A sink that takes the operation's callback and then fails to allocate (fault injection).
class ThrowingSink : public HeldSink {
  public:
    void apply(const WriteOp& op, Done done) override {
        HeldSink::apply(op, std::move(done));
        throw std::bad_alloc();
    }
};

// A 1 MiB zero image, its ring, and a primary export opened on it by each test.
class ExportWritePath : public ::testing::Test {
  protected:
    void SetUp() override {
        path = dir / "e.img";
        imagesync_test::make_zero_file(path, 1 << 20);
        auto u = Uring::create(io, 16);
        ASSERT_TRUE(u) << u.error().message;
        uring = std::move(*u);
    }
    void TearDown() override {
        if (uring) uring->stop();
    }
    vmha::Result<std::unique_ptr<Export>> open(InlineWriteLimits limits = {}) {
        return Export::open(*uring, io.get_executor(), ExportSpec{"e", path, std::nullopt},
                            Role::primary, false, limits);
    }
    static WriteOp write(std::uint64_t offset, const std::vector<std::byte>& data) {
        WriteOp op;
        op.kind = WriteOp::Kind::write;
        op.offset = offset;
        op.length = data.size();
        op.data = data;
        return op;
    }
    // Runs the loop until `done()` or 10 s.
    template <typename Done>
    void run_until(Done done) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (!done() && std::chrono::steady_clock::now() < deadline) {
            io.run_one_for(std::chrono::milliseconds(10));
        }
    }

    imagesync_test::TempDir dir;
    std::filesystem::path path;
    asio::io_context io;
    std::unique_ptr<Uring> uring;
};

TEST_F(ExportWritePath, OverlappingWritesReachSinksOneAtATimeInArrivalOrder) {
    {
        auto e = open();
        ASSERT_TRUE(e) << e.error().message;
        Export& ex = **e;
        auto sink = std::make_shared<HeldSink>();
        ex.add_sink(sink);

        const std::vector<std::byte> a(4096, std::byte{0xaa});
        const std::vector<std::byte> b(512, std::byte{0xbb});
        const std::vector<std::byte> c(4096, std::byte{0xcc});
        // Arrival order: a [0, 4096), b [512, 1024) overlapping a, c [8192, 12288) apart.
        auto ta = ex.locks().enqueue(0, a.size());
        auto tb = ex.locks().enqueue(512, b.size());
        auto tc = ex.locks().enqueue(8192, c.size());
        int completed = 0;
        std::vector<char> order;
        ex.apply_in_order(ta, write(0, a), [&](vmha::Status s) {
            EXPECT_TRUE(s);
            order.push_back('a');
            ++completed;
        });
        ex.apply_in_order(tb, write(512, b), [&](vmha::Status s) {
            EXPECT_TRUE(s);
            order.push_back('b');
            ++completed;
        });
        ex.apply_in_order(tc, write(8192, c), [&](vmha::Status s) {
            EXPECT_TRUE(s);
            order.push_back('c');
            ++completed;
        });
        run_until([&] { return sink->seen.size() >= 2; });
        ASSERT_EQ(sink->seen.size(), 2U) << "a and c run in parallel, b waits for a";
        EXPECT_EQ(sink->seen[0].first, std::byte{0xaa});
        EXPECT_EQ(sink->seen[1].first, std::byte{0xcc});
        // Even with the local write of a done, b waits until the sink finished a too.
        for (int i = 0; i < 20; ++i) io.run_one_for(std::chrono::milliseconds(5));
        EXPECT_EQ(sink->seen.size(), 2U);
        EXPECT_TRUE(order.empty()) << "a write completed before its sink did";

        auto done_a = std::move(sink->seen[0].done);
        done_a({});
        run_until([&] { return sink->seen.size() >= 3; });
        ASSERT_EQ(sink->seen.size(), 3U);
        EXPECT_EQ(sink->seen[2].first, std::byte{0xbb});
        EXPECT_EQ(sink->seen[2].offset, 512U);
        auto done_c = std::move(sink->seen[1].done);
        done_c({});
        auto done_b = std::move(sink->seen[2].done);
        done_b({});
        run_until([&] { return completed == 3; });
        EXPECT_EQ(order, (std::vector<char>{'a', 'c', 'b'}));
        EXPECT_EQ(ex.locks().size(), 0U);

        // A sink failure fails the write even though the local write succeeded.
        auto td = ex.locks().enqueue(0, 512);
        std::optional<vmha::Status> result;
        ex.apply_in_order(td, write(0, b), [&](vmha::Status s) { result = std::move(s); });
        run_until([&] { return sink->seen.size() >= 4; });
        ASSERT_EQ(sink->seen.size(), 4U);
        auto done_d = std::move(sink->seen[3].done);
        done_d(vmha::Error(vmha::errc::connection_lost, "peer gone"));
        run_until([&] { return result.has_value(); });
        ASSERT_TRUE(result.has_value());
        EXPECT_FALSE(*result);
    }
    const std::string content = imagesync_test::read_file(path);
    EXPECT_EQ(static_cast<unsigned char>(content[0]), 0xbb);
    EXPECT_EQ(static_cast<unsigned char>(content[511]), 0xbb);
    EXPECT_EQ(static_cast<unsigned char>(content[512]), 0xbb);
    EXPECT_EQ(static_cast<unsigned char>(content[1024]), 0xaa);
    EXPECT_EQ(static_cast<unsigned char>(content[8192]), 0xcc);
}

// A primary without a peer has nothing to join: its inline writes and flushes answer inside
// the call, so the NBD reply goes out before the loop turns. A write through the ring, a write
// whose ticket waits, and any write once a sink is attached still answer later.
TEST_F(ExportWritePath, ALonePrimaryAnswersInlineWritesAndFlushesInsideTheCall) {
    {
        InlineWriteLimits patient;  // never a stall, however busy the machine
        patient.stall = std::chrono::hours(1);
        auto e = open(patient);
        ASSERT_TRUE(e) << e.error().message;
        Export& ex = **e;
        const std::vector<std::byte> page(4096, std::byte{0x5a});
        const std::vector<std::byte> big(256 * 1024, std::byte{0x6b});
        WriteOp flush;
        flush.kind = WriteOp::Kind::flush;
        auto answered = [](const std::optional<vmha::Status>& r) { return [&r] { return r.has_value(); }; };

        std::optional<vmha::Status> small;
        ex.apply_in_order(ex.locks().enqueue(0, page.size()), write(0, page),
                          [&](vmha::Status s) { small = std::move(s); });
        ASSERT_TRUE(small.has_value()) << "an inline write with its ticket granted answers at once";
        EXPECT_TRUE(*small);
        EXPECT_EQ(ex.locks().size(), 0U) << "and gives its range back";

        std::optional<vmha::Status> flushed;
        ex.apply(flush, [&](vmha::Status s) { flushed = std::move(s); });
        ASSERT_TRUE(flushed.has_value()) << "a small flush runs fdatasync inside the call";
        EXPECT_TRUE(*flushed);
        EXPECT_EQ(ex.file().write_counts().inline_flushes, 1U);

        std::optional<vmha::Status> large;  // over the inline limit: io_uring
        ex.apply_in_order(ex.locks().enqueue(65536, big.size()), write(65536, big),
                          [&](vmha::Status s) { large = std::move(s); });
        EXPECT_FALSE(large.has_value());
        // A write overlapping the one in flight waits for its ticket, then answers from there.
        std::optional<vmha::Status> waiting;
        ex.apply_in_order(ex.locks().enqueue(65536, page.size()), write(65536, page),
                          [&](vmha::Status s) { waiting = std::move(s); });
        EXPECT_FALSE(waiting.has_value());
        run_until(answered(large));
        run_until(answered(waiting));
        ASSERT_TRUE(large.has_value() && waiting.has_value());
        EXPECT_TRUE(*large);
        EXPECT_TRUE(*waiting);

        // With a sink attached, the local write no longer answers alone.
        auto sink = std::make_shared<HeldSink>();
        ex.add_sink(sink);
        std::optional<vmha::Status> joined;
        ex.apply_in_order(ex.locks().enqueue(8192, page.size()), write(8192, page),
                          [&](vmha::Status s) { joined = std::move(s); });
        EXPECT_FALSE(joined.has_value());
        ASSERT_EQ(sink->seen.size(), 1U);
        for (int i = 0; i < 20 && !joined; ++i) io.run_one_for(std::chrono::milliseconds(5));
        EXPECT_FALSE(joined.has_value()) << "answered before the sink was done";
        auto done = std::move(sink->seen[0].done);
        done({});
        run_until(answered(joined));
        ASSERT_TRUE(joined.has_value());
        EXPECT_TRUE(*joined);
    }
    const std::string content = imagesync_test::read_file(path);
    EXPECT_EQ(static_cast<unsigned char>(content[0]), 0x5a);
    EXPECT_EQ(static_cast<unsigned char>(content[65536]), 0x5a) << "the later overlapping write last";
    EXPECT_EQ(static_cast<unsigned char>(content[65536 + 4096]), 0x6b);
    EXPECT_EQ(static_cast<unsigned char>(content[8192]), 0x5a);
}

TEST(ImageFileOpen, MissingFileIsAWholeSentence) {
    asio::io_context io;
    auto u = Uring::create(io, 8);
    ASSERT_TRUE(u);
    auto f = ImageFile::open(**u, "/nonexistent/x.img", true);
    ASSERT_FALSE(f);
    EXPECT_TRUE(f.error().is(vmha::errc::not_found));
    EXPECT_NE(f.error().message.find("\"/nonexistent/x.img\""), std::string::npos);
    (*u)->stop();
}

// Once a flush started (its local part and a sink hold its callback), an exception from a sink
// ends the process instead of reaching the connection, which would answer the flush with an
// error and then again when the held callbacks complete.
TEST_F(ExportWritePath, AnExceptionAfterAFlushStartedEndsTheProcessInsteadOfAnsweringTwice) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_DEATH(
        {
            auto e = open();
            if (!e) std::abort();
            // This child ends without destructors: its copy of the fixture's directory goes now
            // (the export keeps its descriptor).
            std::filesystem::remove_all(dir.path());
            (*e)->add_sink(std::make_shared<ThrowingSink>());
            WriteOp flush;
            flush.kind = WriteOp::Kind::flush;
            try {
                (*e)->apply(flush, [](vmha::Status) {});
            } catch (...) {
                std::_Exit(0);  // reached the caller: the death test fails
            }
            std::_Exit(0);
        },
        "");
}

}  // namespace
}  // namespace imagesync
