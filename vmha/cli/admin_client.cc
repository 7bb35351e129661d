// Blocking client of vmhad's admin socket: connect, send one line, read one line, all within
// one deadline (poll()).
#include "admin_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace vmha::cli {
namespace {

using Clock = std::chrono::steady_clock;

class Fd {
public:
    explicit Fd(int fd) : fd_(fd) {}
    ~Fd() {
        if (fd_ >= 0) ::close(fd_);
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    int get() const { return fd_; }

private:
    int fd_;
};

// Waits for `events` on `fd` until `deadline`; false on timeout (errno = ETIMEDOUT).
bool wait_for(int fd, short events, Clock::time_point deadline) {
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0) {
            errno = ETIMEDOUT;
            return false;
        }
        pollfd p{fd, events, 0};
        const int n = ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), 60'000)));
        if (n > 0) return true;
        if (n < 0 && errno != EINTR) return false;
    }
}

}  // namespace

AdminReply ask_vmhad(const std::string& socket_path, nlohmann::json request,
                     std::chrono::milliseconds timeout) {
    AdminReply r;
    const auto deadline = Clock::now() + timeout;
    Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) {
        r.problem = std::strerror(errno);
        return r;
    }
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (socket_path.size() >= sizeof addr.sun_path) {
        r.problem = fmt::format("the socket path is longer than {} bytes", sizeof addr.sun_path - 1);
        return r;
    }
    std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size());
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        r.problem = std::strerror(errno);
        return r;
    }
    request["version"] = 1;
    const std::string line = request.dump() + "\n";
    std::size_t sent = 0;
    while (sent < line.size()) {
        if (!wait_for(fd.get(), POLLOUT, deadline)) {
            r.problem = fmt::format("sending the request: {}", std::strerror(errno));
            return r;
        }
        const ssize_t n = ::send(fd.get(), line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            r.problem = fmt::format("sending the request: {}", std::strerror(errno));
            return r;
        }
        sent += static_cast<std::size_t>(n);
    }
    std::string in;
    char buf[16384];
    while (in.find('\n') == std::string::npos) {
        if (!wait_for(fd.get(), POLLIN, deadline)) {
            r.problem = errno == ETIMEDOUT
                            ? fmt::format("no answer within {} s", timeout.count() / 1000)
                            : fmt::format("reading the answer: {}", std::strerror(errno));
            return r;
        }
        const ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            r.problem = fmt::format("reading the answer: {}", std::strerror(errno));
            return r;
        }
        if (n == 0) {
            r.problem = "vmhad closed the connection without an answer";
            return r;
        }
        in.append(buf, static_cast<std::size_t>(n));
    }
    auto body = nlohmann::json::parse(in.substr(0, in.find('\n')), nullptr, false);
    if (body.is_discarded() || !body.is_object() || !body.contains("ok") || !body["ok"].is_boolean()) {
        r.problem = "the answer is not a JSON object with \"ok\"";
        return r;
    }
    r.reached = true;
    r.body = std::move(body);
    return r;
}

}  // namespace vmha::cli
