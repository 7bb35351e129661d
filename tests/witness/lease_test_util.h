// Helpers for the lease tests: certificates from configs/vmha-certs.sh, a real vmha-witness
// or etcd process on private ports, and synchronous calls to a LeaseBackend driven on an
// io_context with a deadline.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <utility>  // Boost 1.74's Asio headers need it first under GCC 12
#include <vector>

#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include <vmha/lease/lease.h>

#include "daemon.h"

namespace lease_test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using vmha::Result;
using vmha::lease::LeaseBackend;
using vmha::lease::LeaseKey;
using vmha::lease::LeaseState;
using Clock = std::chrono::steady_clock;

// Certificates in DIR: ca.pem + hv1..hv4 + witness1; DIR/other: another CA + hv2.
void make_certs(const fs::path& dir);

// Runs `io` until `done` is set or 15 s pass (then fails the test).
template <typename T>
T await(boost::asio::io_context& io, std::optional<T>& done) {
    const auto deadline = Clock::now() + 15s;
    io.restart();
    while (!done && Clock::now() < deadline) io.run_one_for(50ms);
    if (!done) {
        ADD_FAILURE() << "no answer within 15 s";
        return T(vmha::Error(vmha::errc::timeout, "test deadline"));
    }
    return std::move(*done);
}

inline Result<LeaseState> acquire(boost::asio::io_context& io, LeaseBackend& b, const LeaseKey& key,
                                  const std::string& node, std::chrono::milliseconds ttl) {
    std::optional<Result<LeaseState>> out;
    b.acquire(key, node, ttl, [&](Result<LeaseState> r) { out = std::move(r); });
    return await(io, out);
}
inline Result<LeaseState> renew(boost::asio::io_context& io, LeaseBackend& b, const LeaseKey& key,
                                const std::string& node, std::chrono::milliseconds ttl) {
    std::optional<Result<LeaseState>> out;
    b.renew(key, node, ttl, [&](Result<LeaseState> r) { out = std::move(r); });
    return await(io, out);
}
inline vmha::Status release(boost::asio::io_context& io, LeaseBackend& b, const LeaseKey& key,
                            const std::string& node) {
    std::optional<vmha::Status> out;
    b.release(key, node, [&](vmha::Status s) { out = std::move(s); });
    return await(io, out);
}
inline Result<LeaseState> query(boost::asio::io_context& io, LeaseBackend& b, const LeaseKey& key) {
    std::optional<Result<LeaseState>> out;
    b.query(key, [&](Result<LeaseState> r) { out = std::move(r); });
    return await(io, out);
}

// Lets the io_context run (no request) for `d`: the pause between renewals.
inline void run_for(boost::asio::io_context& io, std::chrono::milliseconds d) {
    io.restart();
    io.run_for(d);
}

// Polls until a TCP connect to 127.0.0.1:port succeeds, the process dies, or 20 s pass.
::testing::AssertionResult wait_port(pid_t pid, std::uint16_t port, const fs::path& log);

// A process we started, killed by PID (SIGKILL) when the guard goes; its log shown on failure.
class Process {
  public:
    Process(std::vector<std::string> argv, fs::path log);
    ~Process();
    Process(const Process&) = delete;
    Process& operator=(const Process&) = delete;
    pid_t pid() const { return pid_; }
    const fs::path& log() const { return log_; }
    std::optional<int> stop(int signo);                               // signal, then wait (20 s)
    std::optional<int> wait_exit(std::chrono::milliseconds timeout);  // exit by itself
    bool running();

  private:
    pid_t pid_ = -1;
    fs::path log_;
    std::string name_;
};

}  // namespace lease_test
