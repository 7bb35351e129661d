// Unit tests of the replication send thread (replication/send_thread.h) on real loopback TCP
// sockets: a large gather list arrives whole and in order through a socket much smaller than
// it (the thread waits for room), a peer that went away fails the batch, and a shutdown of a
// socket whose peer never reads ends a blocked batch with an error instead of hanging.
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
#include "replication/send_thread.h"

namespace imagesync {
namespace {

using boost::asio::ip::tcp;

struct Pair {
    asio::io_context io;
    tcp::socket sender{io};
    tcp::socket receiver{io};

    Pair() {
        tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
        sender.connect(acceptor.local_endpoint());
        acceptor.accept(receiver);
        // Small buffers, so that a batch of megabytes must wait for room many times.
        sender.set_option(asio::socket_base::send_buffer_size(16 * 1024));
        receiver.set_option(asio::socket_base::receive_buffer_size(16 * 1024));
        sender.non_blocking(true);  // as asio leaves a socket it has used asynchronously
    }

    // Runs send() of `buffers` on the loop until it returns.
    boost::system::error_code send(SendThread& thread, const std::vector<asio::const_buffer>& buffers) {
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

TEST(SendThread, ALargeGatherListArrivesWholeAndInOrder) {
    Pair pair;
    std::vector<std::vector<std::byte>> pieces;
    std::vector<asio::const_buffer> buffers;
    for (unsigned i = 0; i < 40; ++i) {
        pieces.push_back(pattern(i % 3 == 0 ? 32 : (i + 1) * 37 * 1024 + i, i));
    }
    pieces.emplace_back();  // an empty buffer is skipped
    std::vector<std::byte> expected;
    for (const auto& p : pieces) {
        buffers.emplace_back(p.data(), p.size());
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

    // The same thread sends the next batch.
    const auto more = pattern(300 * 1024, 7);
    std::vector<std::byte> again(more.size());
    std::thread reader2([&] { asio::read(pair.receiver, asio::buffer(again)); });
    EXPECT_FALSE(pair.send(thread, {asio::buffer(more)}));
    reader2.join();
    EXPECT_EQ(again, more);
}

TEST(SendThread, APeerThatWentAwayFailsTheBatch) {
    Pair pair;
    pair.receiver.close();
    const auto data = pattern(8u << 20, 1);
    SendThread thread(pair.sender.native_handle(), pair.io.get_executor());
    const auto ec = pair.send(thread, {asio::buffer(data)});
    EXPECT_TRUE(ec) << "8 MiB were accepted by a socket whose peer is closed";
}

TEST(SendThread, AShutdownEndsABatchBlockedOnAPeerThatNeverReads) {
    Pair pair;
    const auto data = pattern(16u << 20, 2);  // far more than both socket buffers hold
    SendThread thread(pair.sender.native_handle(), pair.io.get_executor());
    // The shutdown is posted: it runs on the loop while the thread is sending (or waiting for
    // room), as Session::close does.
    asio::post(pair.io, [&] {
        boost::system::error_code ignored;
        pair.sender.shutdown(tcp::socket::shutdown_both, ignored);
    });
    const auto ec = pair.send(thread, {asio::buffer(data)});
    EXPECT_TRUE(ec) << "16 MiB were sent to a peer that read nothing";
}

}  // namespace
}  // namespace imagesync
