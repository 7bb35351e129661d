// Unit tests of the data path's buffers: the payload pool (reuse, size classes, large buffers,
// unsharing a buffer's pages) and the receive buffer in front of a socket (messages split across reads at every boundary,
// the synchronous fast path, a message larger than the buffer, a stream arriving in pieces).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

#include "asio.h"

#include <boost/asio/local/connect_pair.hpp>
#include "buffer_pool.h"
#include "buffered_reader.h"
#include "zeroes.h"

namespace imagesync {
namespace {

TEST(BufferPool, ABufferGivenBackIsReusedForTheSameSizeClass) {
    BufferPool pool;
    Buffer a = pool.take(4096);
    ASSERT_EQ(a.size(), 4096U);
    EXPECT_EQ(a.capacity(), 4096U);
    std::byte* first = a.data();
    pool.give(std::move(a));
    EXPECT_EQ(pool.cached(), 1U);
    // 3000 bytes round up to the same 4 KiB class: the same memory comes back.
    Buffer b = pool.take(3000);
    EXPECT_EQ(b.data(), first);
    EXPECT_EQ(b.size(), 3000U);
    EXPECT_EQ(pool.allocations(), 1U);
    EXPECT_EQ(pool.cached(), 0U);
}

TEST(BufferPool, SizeClassesArePowersOfTwoAndDoNotMix) {
    BufferPool pool;
    Buffer small = pool.take(100);
    EXPECT_EQ(small.capacity(), BufferPool::kMinClassBytes);
    Buffer mid = pool.take(600 * 1024);
    EXPECT_EQ(mid.capacity(), 1024U * 1024);
    pool.give(std::move(small));
    // A 1 MiB request does not get the 4 KiB buffer.
    Buffer big = pool.take(1024 * 1024);
    EXPECT_EQ(big.capacity(), 1024U * 1024);
    EXPECT_EQ(pool.allocations(), 3U);
    EXPECT_EQ(pool.cached(), 1U);
}

TEST(BufferPool, LargeBuffersAreWholePagesAndNotKept) {
    BufferPool pool;
    const std::size_t size = BufferPool::kMaxClassBytes + 1;
    Buffer b = pool.take(size);
    EXPECT_EQ(b.size(), size);
    EXPECT_EQ(b.capacity(), BufferPool::kMaxClassBytes + kBufferAlign);  // pages of its own
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(b.data()) % kBufferAlign, 0U);
    std::memset(b.data(), 0xab, b.capacity());  // all of it is usable (ASan checks the bounds)
    pool.give(std::move(b));
    EXPECT_EQ(pool.cached(), 0U);
    EXPECT_TRUE(pool.take(0).empty());
    pool.give(Buffer());  // an empty buffer is simply dropped
    EXPECT_EQ(pool.cached(), 0U);
}

TEST(BufferPool, EachClassKeepsABoundedNumber) {
    BufferPool pool;
    std::vector<Buffer> out;
    for (std::size_t i = 0; i < BufferPool::kMaxCachedPerClass + 10; ++i) out.push_back(pool.take(8192));
    for (auto& b : out) pool.give(std::move(b));
    EXPECT_EQ(pool.cached(), BufferPool::kMaxCachedPerClass);
}

// Reads `sizes` messages through a BufferedReader of `capacity` bytes from a socket carrying
// `stream`, alternately by the synchronous fast path and by read_exact, and returns what was
// read, concatenated. The stream is in the socket from the start, or, `in_pieces`, sent in
// pieces of 1 to 4 999 bytes by a writer that yields to the reader between them.
std::vector<std::byte> read_messages(const std::vector<std::byte>& stream,
                                     const std::vector<std::size_t>& sizes, std::size_t capacity,
                                     std::size_t* taken_synchronously, bool in_pieces = false) {
    asio::io_context io;
    asio::local::stream_protocol::socket a(io), b(io);
    asio::local::connect_pair(a, b);
    if (!in_pieces) {
        asio::write(b, asio::buffer(stream));  // small enough for the socket buffer
        b.shutdown(asio::socket_base::shutdown_send);
    } else {
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
                std::size_t at = 0;
                for (std::size_t i = 0; at < stream.size(); ++i) {
                    const std::size_t n = std::min(stream.size() - at, 1 + (i * 1231) % 4999);
                    co_await asio::async_write(b, asio::buffer(stream.data() + at, n),
                                               asio::use_awaitable);
                    at += n;
                    co_await asio::post(io, asio::use_awaitable);  // let the reader run
                }
                b.shutdown(asio::socket_base::shutdown_send);
            },
            asio::detached);
    }

    std::vector<std::byte> got;
    *taken_synchronously = 0;
    bool failed = false;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            BufferedReader<asio::local::stream_protocol::socket> reader(a, capacity);
            for (const std::size_t n : sizes) {
                std::vector<std::byte> message(n);
                if (reader.try_take(message)) {
                    ++*taken_synchronously;
                } else {
                    const auto ec = co_await reader.read_exact(message);
                    if (ec) {
                        failed = true;
                        co_return;
                    }
                }
                got.insert(got.end(), message.begin(), message.end());
            }
            // Nothing is left: the next read sees the end of the stream.
            std::array<std::byte, 1> extra{};
            EXPECT_FALSE(reader.try_take(extra));
            EXPECT_TRUE(co_await reader.read_exact(extra));
        },
        asio::detached);
    io.run();
    EXPECT_FALSE(failed) << "the stream ended early";
    return got;
}

TEST(BufferedReader, MessagesSplitAcrossReadsAtEveryBoundaryArriveWhole) {
    // Headers of 28 and 32 bytes, payloads of 0..2000 bytes, through a 64-byte buffer: every
    // message straddles reads, some payloads exceed the buffer (read directly into place).
    std::vector<std::size_t> sizes;
    for (std::size_t i = 0; i < 40; ++i) {
        sizes.push_back(i % 2 == 0 ? 28 : 32);
        sizes.push_back((i * 61) % 2001);
    }
    const std::size_t total = std::accumulate(sizes.begin(), sizes.end(), std::size_t{0});
    std::vector<std::byte> stream(total);
    for (std::size_t i = 0; i < total; ++i) stream[i] = static_cast<std::byte>(i * 7 + i / 251);

    for (const std::size_t capacity : {std::size_t{1}, std::size_t{64}, std::size_t{4096},
                                       std::size_t{256 * 1024}}) {
        std::size_t synchronous = 0;
        const auto got = read_messages(stream, sizes, capacity, &synchronous);
        EXPECT_EQ(got, stream) << "capacity " << capacity;
        if (capacity == 256 * 1024) {
            // The whole stream fits the buffer: after the first read, everything is taken
            // without suspending.
            EXPECT_GE(synchronous, sizes.size() - 1);
        }
    }
}

TEST(BufferedReader, AStreamArrivingInSmallPiecesArrivesWhole) {
    // A scatter read gets part of its destination, exactly its destination, or its
    // destination and more.
    std::vector<std::size_t> sizes;
    for (std::size_t i = 0; i < 30; ++i) {
        sizes.push_back(32);
        sizes.push_back((i * 977) % 20'000);
    }
    const std::size_t total = std::accumulate(sizes.begin(), sizes.end(), std::size_t{0});
    std::vector<std::byte> stream(total);
    for (std::size_t i = 0; i < total; ++i) stream[i] = static_cast<std::byte>(i * 13 + i / 509);

    for (const std::size_t capacity : {std::size_t{16}, std::size_t{4096}, std::size_t{65536}}) {
        std::size_t synchronous = 0;
        EXPECT_EQ(read_messages(stream, sizes, capacity, &synchronous, true), stream)
            << "capacity " << capacity;
    }
}

// Eight (32-byte header, 1 MiB payload) frames, then 200 small messages, through a reader with
// the default buffer, from a writer that runs alongside it. `lockstep`: the writer sends each
// frame only once the reader has the previous one whole, so the reader's buffer is empty when
// the next header comes (it cannot tell, from the header's size, that a large payload follows).
struct LargeFramesRead {
    bool intact = false;
    std::uint64_t copied_after_first_frame = 0;  // out of the reader's buffer, frames 2..8
    std::size_t small_taken_synchronously = 0;
};
LargeFramesRead read_large_frames(bool lockstep) {
    std::vector<std::size_t> sizes;
    for (int i = 0; i < 8; ++i) {
        sizes.push_back(32);
        sizes.push_back(1u << 20);
    }
    for (std::size_t i = 0; i < 200; ++i) sizes.push_back(24 + i % 9);
    const std::size_t total = std::accumulate(sizes.begin(), sizes.end(), std::size_t{0});
    std::vector<std::byte> stream(total);
    for (std::size_t i = 0; i < total; ++i) stream[i] = static_cast<std::byte>(i * 11 + i / 4093);

    asio::io_context io;
    asio::local::stream_protocol::socket a(io), b(io);
    asio::local::connect_pair(a, b);
    asio::steady_timer frame_read(io, asio::steady_timer::time_point::max());
    std::size_t frames_read = 0;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            if (!lockstep) {
                co_await asio::async_write(b, asio::buffer(stream), asio::use_awaitable);
            } else {
                std::size_t at = 0;
                for (std::size_t frame = 0; frame < 8; ++frame) {
                    const std::size_t n = 32 + (1u << 20);
                    co_await asio::async_write(b, asio::buffer(stream.data() + at, n),
                                               asio::use_awaitable);
                    at += n;
                    while (frames_read <= frame) {
                        boost::system::error_code ignored;
                        co_await frame_read.async_wait(
                            asio::redirect_error(asio::use_awaitable, ignored));
                        frame_read.expires_at(asio::steady_timer::time_point::max());
                    }
                }
                co_await asio::async_write(b, asio::buffer(stream.data() + at, total - at),
                                           asio::use_awaitable);
            }
            b.shutdown(asio::socket_base::shutdown_send);
        },
        asio::detached);
    std::vector<std::byte> got;
    LargeFramesRead result;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            BufferedReader<asio::local::stream_protocol::socket> reader(a);
            std::uint64_t after_first = 0;
            for (std::size_t k = 0; k < sizes.size(); ++k) {
                std::vector<std::byte> message(sizes[k]);
                if (reader.try_take(message)) {
                    if (k >= 16) ++result.small_taken_synchronously;
                } else {
                    EXPECT_FALSE(co_await reader.read_exact(message));
                }
                got.insert(got.end(), message.begin(), message.end());
                if (k == 1) after_first = reader.copied();
                if (k == 15) result.copied_after_first_frame = reader.copied() - after_first;
                if (k < 16 && k % 2 == 1) {
                    ++frames_read;
                    frame_read.cancel();
                }
            }
        },
        asio::detached);
    io.run();
    result.intact = got == stream;
    return result;
}

TEST(BufferedReader, AroundLargeMessagesItCopiesLittleAndSmallOnesStillComeManyPerRead) {
    // Once a large message came (the reader cannot know before the first), a payload is read
    // into place: what the reader copies out of its buffer is the headers and at most
    // kTailAfterLarge of each payload, whether the next header is already in the buffer
    // (streamed) or is read on its own (lockstep). Small messages after them are again read
    // many at a time.
    constexpr std::uint64_t kBound =
        7 * (32 + BufferedReader<asio::local::stream_protocol::socket>::kTailAfterLarge);
    for (const bool lockstep : {false, true}) {
        const auto r = read_large_frames(lockstep);
        EXPECT_TRUE(r.intact) << "lockstep " << lockstep;
        EXPECT_LE(r.copied_after_first_frame, kBound) << "lockstep " << lockstep;
        // The first small message may come with the last payload's short tail.
        EXPECT_GE(r.small_taken_synchronously, 190U) << "lockstep " << lockstep;
    }
}

// unshare_pages() gives a buffer fresh pages (zeroes) over exactly its own whole pages: the
// bytes of a neighbouring buffer stay.
TEST(BufferPool, UnsharePagesZeroesTheBufferAndNothingElse) {
    BufferPool pool;
    Buffer left = pool.take(64 * 1024);
    Buffer middle = pool.take(64 * 1024 - 100);  // the payload ends inside its last page
    Buffer right = pool.take(64 * 1024);
    for (Buffer* b : {&left, &middle, &right}) std::memset(b->data(), 0x5a, b->capacity());
    ASSERT_TRUE(unshare_pages(middle.span()));
    EXPECT_TRUE(std::all_of(middle.data(), middle.data() + middle.capacity(),
                            [](std::byte x) { return x == std::byte{0}; }));
    for (const Buffer* b : {&left, &right}) {
        EXPECT_TRUE(std::all_of(b->data(), b->data() + b->capacity(),
                                [](std::byte x) { return x == std::byte{0x5a}; }));
    }
    middle.data()[0] = std::byte{1};  // the fresh pages are writable
    EXPECT_EQ(middle.data()[0], std::byte{1});
    EXPECT_TRUE(unshare_pages({}));
}

}  // namespace
}  // namespace imagesync

// A resync chunk goes as ZEROES only when every byte is zero: one non-zero byte anywhere (the
// first, the last, in between) and it goes as data.
TEST(AllZero, OneNonZeroByteAnywhereMakesItData) {
    EXPECT_TRUE(imagesync::all_zero({}));
    for (const std::size_t size : {std::size_t{1}, std::size_t{2}, std::size_t{4095},
                                   std::size_t{4} << 20}) {
        std::vector<std::byte> data(size);
        EXPECT_TRUE(imagesync::all_zero(data)) << size;
        for (const std::size_t at : {std::size_t{0}, size / 2, size - 1}) {
            data[at] = std::byte{0x01};
            EXPECT_FALSE(imagesync::all_zero(data)) << size << " at " << at;
            data[at] = std::byte{0x80};
            EXPECT_FALSE(imagesync::all_zero(data)) << size << " at " << at;
            data[at] = std::byte{0};
        }
        EXPECT_TRUE(imagesync::all_zero(data)) << size;
    }
}
