// Helpers for the services tests: run an io_context until a condition holds (with a deadline),
// run one in a background thread, free loopback ports, and a blocking line client for unix
// sockets. Process helpers (TempDir, spawn, run_tool) come from tests/imagesync/daemon.h.
#pragma once

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <fmt/format.h>
#include <boost/asio/post.hpp>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <vmha/services/asio.h>

#include "daemon.h"

namespace services_test {

using namespace imagesync_test;
using namespace std::chrono_literals;

// Runs `io` on this thread until `done()` holds or `timeout` passes; false on timeout.
inline bool run_until(boost::asio::io_context& io, const std::function<bool()>& done,
                      std::chrono::milliseconds timeout = 20s) {
    const auto deadline = Clock::now() + timeout;
    while (!done()) {
        if (Clock::now() > deadline) return false;
        io.restart();
        if (io.run_for(20ms) == 0) std::this_thread::sleep_for(1ms);  // nothing to do yet
    }
    return true;
}

// An io_context running on its own thread; `call` runs a function there and waits for it.
class LoopThread {
public:
    LoopThread() : guard_(boost::asio::make_work_guard(io_)), thread_([this] { io_.run(); }) {}
    ~LoopThread() { join(); }
    void join() {
        if (!thread_.joinable()) return;
        guard_.reset();
        io_.stop();
        thread_.join();
    }
    boost::asio::io_context& io() { return io_; }
    template <typename F>
    auto call(F f) {
        std::promise<decltype(f())> p;
        boost::asio::post(io_, [&] {
            if constexpr (std::is_void_v<decltype(f())>) {
                f();
                p.set_value();
            } else {
                p.set_value(f());
            }
        });
        return p.get_future().get();
    }

private:
    boost::asio::io_context io_;
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_;
    std::thread thread_;
};

// A blocking client of a line protocol on a unix socket, every read with a deadline.
class LineClient {
public:
    explicit LineClient(const fs::path& socket) : fd_(connect_unix(socket)) {}
    ~LineClient() {
        if (fd_ >= 0) ::close(fd_);
    }
    LineClient(const LineClient&) = delete;
    LineClient& operator=(const LineClient&) = delete;
    bool connected() const { return fd_ >= 0; }

    bool send(const std::string& bytes) {
        std::size_t sent = 0;
        while (sent < bytes.size()) {
            const ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
            if (n <= 0) return false;
            sent += static_cast<std::size_t>(n);
        }
        return true;
    }
    bool send_json(nlohmann::json j) { return send(j.dump() + "\n"); }

    // The next line; nullopt at EOF or after the deadline.
    std::optional<std::string> line(std::chrono::milliseconds timeout = 10s) {
        const auto deadline = Clock::now() + timeout;
        for (;;) {
            if (auto nl = buffer_.find('\n'); nl != std::string::npos) {
                std::string l = buffer_.substr(0, nl);
                buffer_.erase(0, nl + 1);
                return l;
            }
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
            if (left.count() <= 0) return std::nullopt;
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
            char buf[4096];
            const ssize_t n = ::read(fd_, buf, sizeof buf);
            if (n <= 0) return std::nullopt;
            buffer_.append(buf, static_cast<std::size_t>(n));
        }
    }
    nlohmann::json reply(std::chrono::milliseconds timeout = 10s) {
        auto l = line(timeout);
        if (!l) return nullptr;
        return nlohmann::json::parse(*l, nullptr, false);
    }
    // True when the server closed the connection (EOF) before the deadline.
    bool closed_by_peer(std::chrono::milliseconds timeout = 10s) {
        const auto deadline = Clock::now() + timeout;
        while (Clock::now() < deadline) {
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0) continue;
            char buf[4096];
            const ssize_t n = ::read(fd_, buf, sizeof buf);
            if (n <= 0) return true;
        }
        return false;
    }

private:
    int fd_;
    std::string buffer_;
};

}  // namespace services_test
