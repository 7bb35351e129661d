#include "replication/send_thread.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

namespace imagesync {

namespace {

constexpr std::size_t kMaxIov = 64;  // per sendmsg (IOV_MAX is 1024; batches are <= 64 buffers)
// While waiting for room in the socket, how often the thread checks that it should stop.
constexpr int kPollMs = 200;

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
    ::close(fd_);
}

asio::awaitable<boost::system::error_code> SendThread::send(
    const std::vector<asio::const_buffer>& buffers) {
    done_->expires_at(asio::steady_timer::time_point::max());
    {
        std::lock_guard lock(mutex_);
        job_ = &buffers;
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

int SendThread::write_all(const std::vector<asio::const_buffer>& buffers) {
    std::vector<iovec> iov;
    iov.reserve(buffers.size());
    for (const auto& b : buffers) {
        if (b.size() > 0) iov.push_back({const_cast<void*>(b.data()), b.size()});  // NOLINT: only read
    }
    std::size_t next = 0;
    while (next < iov.size()) {
        msghdr message{};
        message.msg_iov = iov.data() + next;
        message.msg_iovlen = std::min(iov.size() - next, kMaxIov);
        const ssize_t n = ::sendmsg(fd_, &message, MSG_NOSIGNAL);
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

}  // namespace imagesync
