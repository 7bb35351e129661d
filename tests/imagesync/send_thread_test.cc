// Unit tests of the replication send thread (replication/send_thread.h) on real loopback TCP
// sockets: a large gather list arrives whole and in order through a socket much smaller than
// it (the thread waits for room), copied or lent (zero-copy send), a peer that went away fails
// the batch, and a shutdown of a socket whose peer never reads ends a blocked batch with an
// error instead of hanging. Zero-copy send's contract: the receiver reads the lent pages
// themselves, so bytes changed before it read them would reach it, and unshare_pages()
// (buffer_pool.h) keeps the bytes that were sent. A kernel that refuses vmsplice or splice
// (made to, in a child process, with a seccomp filter) gets the bytes copied instead.
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <optional>
#include <thread>
#include <vector>

#include <cerrno>
#include <cstddef>
#include <functional>
#include <string>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

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

// ---- A kernel that refuses zero-copy send ----
// The refusal is real: a seccomp filter makes the kernel answer one system call with EINVAL, in
// a child process (the filter cannot be taken back, and the thread remembers a refusal for the
// whole process). `body` returns what went wrong, or an empty string.

#if defined(__x86_64__)
constexpr std::uint32_t kAuditArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
constexpr std::uint32_t kAuditArch = AUDIT_ARCH_AARCH64;
#endif

bool refuse_syscall(long nr) {
    sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kAuditArch, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<std::uint32_t>(nr), 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EINVAL & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog program{static_cast<unsigned short>(std::size(filter)), filter};
    return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
           ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) == 0;
}

std::string in_child_refusing(long nr, const std::function<std::string()>& body) {
    int report[2];
    if (::pipe(report) != 0) return "pipe failed";
    const pid_t child = ::fork();
    if (child < 0) return "fork failed";
    if (child == 0) {
        ::close(report[0]);
        std::string failure;
        if (!refuse_syscall(nr)) {
            failure = "cannot install the seccomp filter";
        } else if (::syscall(nr, -1, nullptr, 0, nullptr, 0, 0) != -1 || errno != EINVAL) {
            failure = "the filter does not refuse the call (unfiltered, fd -1 gives EBADF)";
        } else {
            failure = body();
        }
        const char* p = failure.data();
        for (std::size_t left = failure.size(); left > 0;) {
            const ssize_t n = ::write(report[1], p, left);
            if (n <= 0) break;
            p += n;
            left -= static_cast<std::size_t>(n);
        }
        ::_exit(0);
    }
    ::close(report[1]);
    std::string failure;
    char chunk[512];
    for (ssize_t n; (n = ::read(report[0], chunk, sizeof chunk)) > 0;) failure.append(chunk, static_cast<std::size_t>(n));
    ::close(report[0]);
    int status = 0;
    ::waitpid(child, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        failure += " (the child process did not exit cleanly: status " + std::to_string(status) + ")";
    }
    return failure;
}

// A batch of frame heads and large payloads marked to be lent, and the bytes it makes.
struct Batch {
    std::vector<std::vector<std::byte>> parts;
    Pieces pieces;
    std::vector<std::byte> bytes;

    explicit Batch(unsigned seed) {
        for (unsigned i = 0; i < 6; ++i) parts.push_back(pattern(i % 2 == 0 ? 32 : (i + 1) * 100 * 1024, seed + i));
        for (const auto& p : parts) {
            pieces.push_back({asio::buffer(p.data(), p.size()), p.size() > 1024});
            bytes.insert(bytes.end(), p.begin(), p.end());
        }
    }
};

// Sends `batch` on `pair` with `thread` and reads it on the other side: what went wrong, or "".
std::string send_and_check(Pair& pair, SendThread& thread, const Batch& batch) {
    std::vector<std::byte> received(batch.bytes.size());
    boost::system::error_code read_ec;
    std::thread reader([&] { asio::read(pair.receiver, asio::buffer(received), read_ec); });
    const auto ec = pair.send(thread, batch.pieces);
    reader.join();
    if (ec) return "the batch failed: " + ec.message();
    if (read_ec) return "the receiver failed: " + read_ec.message();
    if (received != batch.bytes) return "the receiver got other bytes than were sent";
    return "";
}

// vmsplice refused before a byte moved: every piece is copied, the batch succeeds, and so do
// later ones, without trying again.
TEST(SendThread, AKernelThatRefusesVmspliceGetsThePiecesCopied) {
    const std::string failure = in_child_refusing(SYS_vmsplice, [] {
        Pair pair;
        SendThread thread(pair.sender.native_handle(), pair.io.get_executor());
        for (unsigned round = 0; round < 2; ++round) {
            const Batch batch(round * 10);
            if (auto f = send_and_check(pair, thread, batch); !f.empty()) {
                return "batch " + std::to_string(round) + ": " + f;
            }
        }
        if (thread.bytes_lent() != 0) return std::string("bytes were counted as lent");
        return std::string();
    });
    EXPECT_EQ(failure, "");
}

// splice refused after vmsplice put a payload's pages in the pipe: that batch cannot be
// completed by copying (its frame is cut), so it fails and the session would end; the next
// session's thread copies from the start and its batch arrives whole.
TEST(SendThread, AKernelThatRefusesSpliceFailsThatBatchAndTheNextSessionCopies) {
    const std::string failure = in_child_refusing(SYS_splice, [] {
        {
            Pair pair(4 << 20);
            SendThread thread(pair.sender.native_handle(), pair.io.get_executor());
            const Batch batch(1);
            const auto ec = pair.send(thread, batch.pieces);
            if (!ec) return std::string("a batch whose splice was refused succeeded");
            if (ec.value() != EINVAL) return "the batch failed with " + ec.message() + ", not EINVAL";
        }
        Pair pair;
        SendThread thread(pair.sender.native_handle(), pair.io.get_executor());
        if (auto f = send_and_check(pair, thread, Batch(2)); !f.empty()) return "the next session: " + f;
        if (thread.bytes_lent() != 0) return std::string("the next session lent bytes again");
        return std::string();
    });
    EXPECT_EQ(failure, "");
}

}  // namespace
}  // namespace imagesync
