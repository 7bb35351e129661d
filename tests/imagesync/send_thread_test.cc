// Unit tests of the replication send thread (replication/send_thread.h) on real loopback TCP
// sockets: a large gather list arrives whole and in order through a socket much smaller than
// it (the thread waits for room), copied or lent (zero-copy send), a peer that went away fails
// the batch, and a shutdown of a socket whose peer never reads ends a blocked batch with an
// error instead of hanging. Zero-copy send's contract: the receiver reads the lent pages
// themselves, so bytes changed before it read them would reach it, and unshare_pages()
// (buffer_pool.h) keeps the bytes that were sent.
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <optional>
#include <thread>
#include <vector>

#include <sys/socket.h>

#include "asio.h"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include "buffer_pool.h"
#include "replication/send_thread.h"

namespace imagesync {
namespace {

using boost::asio::ip::tcp;

using Pieces = std::vector<SendThread::Piece>;

struct Pair {
    asio::io_context io;
    tcp::socket sender{io};
    tcp::socket receiver{io};

    // `room`: socket buffers of at least this much; 0: small ones (16 KiB), so that a batch of
    // megabytes must wait for room many times.
    explicit Pair(int room = 0) {
        tcp::acceptor acceptor(io);
        const tcp::endpoint local(asio::ip::make_address("127.0.0.1"), 0);
        acceptor.open(local.protocol());
        // Set before listen, so that the accepted socket's window is scaled for it.
        if (room > 0) acceptor.set_option(asio::socket_base::receive_buffer_size(room));
        acceptor.bind(local);
        acceptor.listen();
        sender.open(local.protocol());
        if (room > 0) sender.set_option(asio::socket_base::send_buffer_size(room));
        sender.connect(acceptor.local_endpoint());
        acceptor.accept(receiver);
        if (room == 0) {
            sender.set_option(asio::socket_base::send_buffer_size(16 * 1024));
            receiver.set_option(asio::socket_base::receive_buffer_size(16 * 1024));
        }
        sender.non_blocking(true);  // as asio leaves a socket it has used asynchronously
    }

    // Runs send() of `buffers` on the loop until it returns.
    boost::system::error_code send(SendThread& thread, const Pieces& buffers) {
        std::optional<boost::system::error_code> result;
        asio::co_spawn(io, [&]() -> asio::awaitable<void> { result = co_await thread.send(buffers); },
                       asio::detached);
        io.restart();
        while (!result) io.run_one();
        return *result;
    }
};

std::vector<std::byte> pattern(std::size_t size, unsigned seed) {
    std::vector<std::byte> v(size);
    for (std::size_t i = 0; i < size; ++i) v[i] = static_cast<std::byte>((i * 131 + seed) & 0xff);
    return v;
}

class SendThreadModes : public ::testing::TestWithParam<bool> {};  // lend large pieces?

TEST_P(SendThreadModes, ALargeGatherListArrivesWholeAndInOrder) {
    const bool lend = GetParam();
    Pair pair;
    std::vector<std::vector<std::byte>> pieces;
    Pieces buffers;
    for (unsigned i = 0; i < 40; ++i) {
        pieces.push_back(pattern(i % 3 == 0 ? 32 : (i + 1) * 37 * 1024 + i, i));
    }
    pieces.emplace_back();  // an empty buffer is skipped
    std::vector<std::byte> expected;
    for (const auto& p : pieces) {
        buffers.push_back({asio::buffer(p.data(), p.size()), lend && p.size() > 1024});
        expected.insert(expected.end(), p.begin(), p.end());
    }

    std::vector<std::byte> received(expected.size());
    std::thread reader([&] {
        boost::system::error_code ec;
        asio::read(pair.receiver, asio::buffer(received), ec);
        EXPECT_FALSE(ec) << ec.message();
    });
    SendThread thread(pair.sender.native_handle(), pair.io.get_executor());
    const auto ec = pair.send(thread, buffers);
    reader.join();
    ASSERT_FALSE(ec) << ec.message();
    EXPECT_EQ(std::memcmp(received.data(), expected.data(), expected.size()), 0);
    if (lend) {
        EXPECT_GT(thread.bytes_lent(), 0u) << "no piece went by zero-copy send";
    } else {
        EXPECT_EQ(thread.bytes_lent(), 0u);
    }

    // The same thread sends the next batch.
    const auto more = pattern(300 * 1024, 7);
    std::vector<std::byte> again(more.size());
    std::thread reader2([&] { asio::read(pair.receiver, asio::buffer(again)); });
    EXPECT_FALSE(pair.send(thread, {{asio::buffer(more), lend}}));
    reader2.join();
    EXPECT_EQ(again, more);
}

// The receiver reads lent pages themselves: overwriting the buffer before it read them changes
// what it gets (which is why the contract exists), and unsharing the pages first keeps the bytes
// that were sent while the buffer takes new ones.
TEST(SendThread, LentPagesCarryTheirBytesOnlyIfUnsharedBeforeReuse) {
    constexpr std::size_t kSize = 256 * 1024;
    BufferPool pool;
    for (const bool unshare : {false, true}) {
        SCOPED_TRACE(unshare ? "unshared before reuse" : "reused as is");
        Pair pair(4 << 20);  // room for the whole payload: nothing is read until it was sent
        Buffer buffer = pool.take(kSize);
        const auto sent = pattern(kSize, 3);
        std::memcpy(buffer.data(), sent.data(), kSize);
        SendThread thread(pair.sender.native_handle(), pair.io.get_executor());
        ASSERT_FALSE(pair.send(thread, {{asio::buffer(buffer.data(), kSize), true}}));
        if (thread.bytes_lent() == 0) GTEST_SKIP() << "this kernel refused zero-copy send";
        if (unshare) {
            ASSERT_TRUE(unshare_pages(buffer.span()));
            EXPECT_EQ(buffer.data()[0], std::byte{0}) << "unshared pages read back as zeroes";
        }
        const auto later = pattern(kSize, 99);  // a later write reusing the buffer
        std::memcpy(buffer.data(), later.data(), kSize);
        std::vector<std::byte> received(kSize);
        asio::read(pair.receiver, asio::buffer(received));
        if (unshare) {
            EXPECT_TRUE(received == sent) << "the peer read bytes written after the unshare";
        } else {
            EXPECT_TRUE(received == later)
                << "the payload was copied into the socket, not lent (no zero-copy)";
        }
        pool.give(std::move(buffer));
    }
}

// Lent, the failed splice raises SIGPIPE at the thread (this test binary does not ignore it, as
// imagesyncd does): the thread must take it, not the process.
TEST_P(SendThreadModes, APeerThatWentAwayFailsTheBatch) {
    Pair pair;
    pair.receiver.close();
    const auto data = pattern(8u << 20, 1);
    SendThread thread(pair.sender.native_handle(), pair.io.get_executor());
    const auto ec = pair.send(thread, {{asio::buffer(data), GetParam()}});
    EXPECT_TRUE(ec) << "8 MiB were accepted by a socket whose peer is closed";
}

TEST_P(SendThreadModes, AShutdownEndsABatchBlockedOnAPeerThatNeverReads) {
    Pair pair;
    const auto data = pattern(16u << 20, 2);  // far more than both socket buffers hold
    SendThread thread(pair.sender.native_handle(), pair.io.get_executor());
    // The shutdown is posted: it runs on the loop while the thread is sending (or waiting for
    // room), as Session::close does.
    asio::post(pair.io, [&] {
        boost::system::error_code ignored;
        pair.sender.shutdown(tcp::socket::shutdown_both, ignored);
    });
    const auto ec = pair.send(thread, {{asio::buffer(data), GetParam()}});
    EXPECT_TRUE(ec) << "16 MiB were sent to a peer that read nothing";
}

INSTANTIATE_TEST_SUITE_P(CopiedOrLent, SendThreadModes, ::testing::Bool());

}  // namespace
}  // namespace imagesync
