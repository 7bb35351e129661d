#include "replication/send_thread.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

namespace imagesync {

namespace {

constexpr std::size_t kMaxIov = 64;  // per sendmsg (IOV_MAX is 1024; batches are <= 64 buffers)
constexpr std::size_t kPipeBytes = 1u << 20;
// lend_out(): the kernel refused before a byte moved; the piece can still be copied.
constexpr int kRefused = -1;
// Whether this kernel refused zero-copy send once: then no thread tries again.
std::atomic<bool> kernel_refuses_lending{false};
// While waiting for room in the socket, how often the thread checks that it should stop.
constexpr int kPollMs = 200;

sigset_t sigpipe_only() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    return set;
}

}  // namespace

SendThread::SendThread(int fd, asio::any_io_executor executor)
    : executor_(std::move(executor)),
      done_(std::make_shared<asio::steady_timer>(executor_, asio::steady_timer::time_point::max())) {
    fd_ = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (fd_ < 0) {
        throw std::runtime_error(
            fmt::format("cannot duplicate the replication socket: {}", std::strerror(errno)));
    }
    thread_ = std::thread([this] { run(); });
}

SendThread::~SendThread() {
    stopping_ = true;
    {
        // Taken once, so the thread is either before its predicate check (and sees stopping_)
        // or already waiting (and gets the notification): no lost wake-up.
        std::lock_guard lock(mutex_);
    }
    wake_.notify_one();
    thread_.join();
    // The pipe may still hold pages of a batch that failed: closing it drops them.
    if (pipe_read_ >= 0) ::close(pipe_read_);
    if (pipe_write_ >= 0) ::close(pipe_write_);
    ::close(fd_);
}

asio::awaitable<boost::system::error_code> SendThread::send(const std::vector<Piece>& pieces) {
    done_->expires_at(asio::steady_timer::time_point::max());
    {
        std::lock_guard lock(mutex_);
        job_ = &pieces;
        finished_ = false;
        result_ = 0;
    }
    wake_.notify_one();
    while (true) {
        boost::system::error_code ignored;  // cancelled: the batch finished (checked below)
        co_await done_->async_wait(asio::redirect_error(asio::use_awaitable, ignored));
        std::lock_guard lock(mutex_);
        if (finished_) {
            co_return result_ == 0
                ? boost::system::error_code{}
                : boost::system::error_code(result_, boost::system::system_category());
        }
    }
}

void SendThread::run() {
    // splice() to a socket has no MSG_NOSIGNAL: a peer gone raises SIGPIPE at this thread,
    // which must not end the process. Blocked here, and taken back after EPIPE (lend_out).
    const sigset_t pipe_signal = sigpipe_only();
    pthread_sigmask(SIG_BLOCK, &pipe_signal, nullptr);
    std::unique_lock lock(mutex_);
    while (true) {
        wake_.wait(lock, [this] { return job_ != nullptr || stopping_; });
        if (job_ == nullptr) return;  // stopping, nothing in flight
        const auto* job = job_;
        lock.unlock();
        const int result = write_all(*job);
        lock.lock();
        job_ = nullptr;
        result_ = result;
        finished_ = true;
        asio::post(executor_, [done = done_] { done->cancel(); });
    }
}

int SendThread::write_all(const std::vector<Piece>& pieces) {
    std::size_t last = 0;  // the last piece with bytes: later ones must not delay it (MSG_MORE)
    for (std::size_t i = 0; i < pieces.size(); ++i) {
        if (pieces[i].bytes.size() > 0) last = i;
    }
    std::vector<iovec> iov;  // copied pieces not sent yet
    iov.reserve(pieces.size());
    for (std::size_t i = 0; i < pieces.size(); ++i) {
        const auto& piece = pieces[i];
        if (piece.bytes.size() == 0) continue;
        auto* data = static_cast<std::byte*>(const_cast<void*>(piece.bytes.data()));  // NOLINT: only read
        if (piece.lend && !lend_refused_ && !kernel_refuses_lending.load(std::memory_order_relaxed) &&
            (pipe_write_ >= 0 || open_pipe())) {
            if (!iov.empty()) {
                if (const int e = copy_out(iov, true); e != 0) return e;
                iov.clear();
            }
            const int e = lend_out(data, piece.bytes.size(), i != last);
            if (e == 0) continue;
            if (e != kRefused) return e;
            // Nothing moved: copy this piece as any other.
        }
        iov.push_back({data, piece.bytes.size()});
    }
    return iov.empty() ? 0 : copy_out(iov, false);
}

int SendThread::copy_out(std::vector<iovec>& iov, bool more) {
    std::size_t next = 0;
    while (next < iov.size()) {
        msghdr message{};
        message.msg_iov = iov.data() + next;
        message.msg_iovlen = std::min(iov.size() - next, kMaxIov);
        const bool all = next + message.msg_iovlen == iov.size();
        const ssize_t n = ::sendmsg(fd_, &message, MSG_NOSIGNAL | (more || !all ? MSG_MORE : 0));
        if (n < 0) {
            const int e = errno;
            if (e == EINTR) continue;
            if (e != EAGAIN && e != EWOULDBLOCK) return e;
            if (stopping_) return ECANCELED;
            // The socket is non-blocking (asio set it on the shared description): wait for room.
            pollfd p{fd_, POLLOUT, 0};
            if (::poll(&p, 1, kPollMs) < 0 && errno != EINTR) return errno;
            continue;
        }
        auto sent = static_cast<std::size_t>(n);
        while (next < iov.size() && sent >= iov[next].iov_len) {
            sent -= iov[next].iov_len;
            ++next;
        }
        if (sent > 0) {
            iov[next].iov_base = static_cast<char*>(iov[next].iov_base) + sent;
            iov[next].iov_len -= sent;
        }
    }
    return 0;
}

bool SendThread::open_pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
        spdlog::warn("zero-copy send: no pipe ({}); copying payloads into the socket",
                     std::strerror(errno));
        lend_refused_ = true;
        return false;
    }
    pipe_read_ = fds[0];
    pipe_write_ = fds[1];
    // A 1 MiB write in one pass where the system allows it (fs.pipe-max-size); else the
    // default 64 KiB pipe, in more passes.
    (void)::fcntl(pipe_write_, F_SETPIPE_SZ, static_cast<int>(kPipeBytes));
    return true;
}

int SendThread::lend_out(const std::byte* data, std::size_t size, bool more) {
    std::size_t in_pipe = 0;
    bool spliced = false;  // bytes reached the socket
    while (size > 0 || in_pipe > 0) {
        bool progress = false;
        if (size > 0) {
            iovec v{const_cast<std::byte*>(data), size};  // NOLINT: vmsplice only reads it
            const ssize_t n = ::vmsplice(pipe_write_, &v, 1, SPLICE_F_NONBLOCK);
            if (n > 0) {
                const auto moved = static_cast<std::size_t>(n);
                data += moved;
                size -= moved;
                in_pipe += moved;
                progress = true;
            } else if (n < 0 && errno == EINTR) {
                progress = true;
            } else if (n < 0 && errno != EAGAIN) {
                return refused(errno, spliced || in_pipe > 0);
            }
        }
        if (in_pipe > 0) {
            const unsigned flags =
                SPLICE_F_MOVE | SPLICE_F_NONBLOCK | (size > 0 || more ? SPLICE_F_MORE : 0U);
            const ssize_t n = ::splice(pipe_read_, nullptr, fd_, nullptr, in_pipe, flags);
            if (n > 0) {
                in_pipe -= static_cast<std::size_t>(n);
                bytes_lent_.fetch_add(static_cast<std::uint64_t>(n), std::memory_order_relaxed);
                spliced = true;
                progress = true;
            } else if (n == 0) {
                return EPIPE;
            } else if (errno == EINTR) {
                progress = true;
            } else if (errno == EPIPE) {
                // The SIGPIPE it raised (blocked on this thread) is discarded.
                const sigset_t pipe_signal = sigpipe_only();
                const timespec now{0, 0};
                while (::sigtimedwait(&pipe_signal, nullptr, &now) == SIGPIPE) {
                }
                return EPIPE;
            } else if (errno != EAGAIN) {
                return refused(errno, true);  // bytes in the pipe: this stream cannot go on
            }
        }
        if (progress) continue;
        if (stopping_) return ECANCELED;
        pollfd p{fd_, POLLOUT, 0};
        if (::poll(&p, 1, kPollMs) < 0 && errno != EINTR) return errno;
    }
    return 0;
}

int SendThread::refused(int error, bool stream_broken) {
    const bool refusal =
        error == EINVAL || error == ENOSYS || error == EPERM || error == EOPNOTSUPP;
    if (!refusal) return error;
    if (!kernel_refuses_lending.exchange(true)) {
        spdlog::warn("zero-copy send refused by the kernel ({}); copying payloads into the "
                     "socket from now on",
                     std::strerror(error));
    }
    // With bytes in the pipe or sent, this frame cannot be completed by copying: the session
    // ends (the next one copies).
    return stream_broken ? error : kRefused;
}

}  // namespace imagesync
