// Test harness for imagesyncd: a private temporary directory, the real binary started on a
// private socket, readiness by polling with a deadline, and cleanup that kills only our own
// PID, even when a test fails. Also runs client tools (qemu-io, nbdinfo, ...) with a deadline.
#pragma once

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <netinet/in.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace imagesync_test {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// A fresh directory under /tmp (short, so socket paths stay below 108 bytes), removed at exit.
class TempDir {
  public:
    TempDir() {
        std::string tmpl = "/tmp/imagesync-test-XXXXXX";
        if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
        path_ = tmpl;
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir() {
        std::error_code ignored;
        fs::remove_all(path_, ignored);
    }
    const fs::path& path() const { return path_; }
    fs::path operator/(const std::string& name) const { return path_ / name; }

  private:
    fs::path path_;
};

// A TCP port nobody listens on, for a daemon to listen on. Chosen at random below the kernel's
// ephemeral range (32768-60999 by default), and checked by binding it on INADDR_ANY, so
// 127.0.0.1 and 127.0.0.2 can both use it: a port from bind(0) is handed out again as soon as
// it is closed -- to another test running in parallel, or as the source port of some
// process's outgoing connection -- and two pairs then met on one port.
inline std::uint16_t free_port() {
    static unsigned state = static_cast<unsigned>(::getpid()) * 2654435761u ^
                            static_cast<unsigned>(std::chrono::steady_clock::now().time_since_epoch().count());
    for (int attempt = 0; attempt < 1000; ++attempt) {
        state = state * 1103515245u + 12345u;
        const auto port = static_cast<std::uint16_t>(20000 + (state >> 8) % 12000);
        const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_ANY);
        addr.sin_port = htons(port);
        const bool bound = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
        ::close(fd);
        if (bound) return port;
    }
    ADD_FAILURE() << "no free port in 20000-31999 after 1000 tries";
    return 0;
}

inline bool have_tool(const std::string& name) {
    const char* path = std::getenv("PATH");
    std::stringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
    std::string dir;
    while (std::getline(dirs, dir, ':')) {
        if (::access((fs::path(dir) / name).c_str(), X_OK) == 0) return true;
    }
    return false;
}

#define IMAGESYNC_REQUIRE_TOOL(name)                                          \
    do {                                                                      \
        if (!::imagesync_test::have_tool(name)) {                             \
            GTEST_SKIP() << "\"" << (name) << "\" is not installed (install " \
                         << "the Debian package that provides it)";           \
        }                                                                     \
    } while (0)

inline pid_t spawn(const std::vector<std::string>& argv, const fs::path& output) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, output.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                     0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = -1;
    const int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) return -1;
    return pid;
}

inline std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Waits for `pid` until the deadline; returns the wait status, or nullopt on timeout.
inline std::optional<int> wait_for(pid_t pid, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
        int status = 0;
        const pid_t r = ::waitpid(pid, &status, WNOHANG);
        if (r == pid) return status;
        if (r < 0) return std::nullopt;
        if (Clock::now() > deadline) return std::nullopt;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));  // poll interval
    }
}

struct ToolResult {
    int exit_code = -1;  // -1: killed or timed out
    std::string output;  // stdout and stderr
};

// Runs a tool to completion (killed after `timeout`).
inline ToolResult run_tool(const std::vector<std::string>& argv, const fs::path& scratch_dir,
                           std::chrono::seconds timeout = std::chrono::seconds(120)) {
    static int counter = 0;
    const fs::path out = scratch_dir / ("tool-" + std::to_string(++counter) + ".out");
    ToolResult result;
    const pid_t pid = spawn(argv, out);
    if (pid < 0) {
        result.output = "cannot start " + argv[0];
        return result;
    }
    auto status = wait_for(pid, timeout);
    if (!status) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        result.output = read_file(out) + "\n[killed after timeout]";
        return result;
    }
    result.output = read_file(out);
    if (WIFEXITED(*status)) result.exit_code = WEXITSTATUS(*status);
    return result;
}

inline std::string describe(const std::vector<std::string>& argv) {
    std::string s;
    for (const auto& a : argv) s += (s.empty() ? "" : " ") + a;
    return s;
}

// Connects to a unix socket; -1 on failure.
inline int connect_unix(const fs::path& socket_path) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket_path.c_str(), sizeof(addr.sun_path) - 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

// The real imagesyncd, on a private socket in `dir`.
class Daemon {
  public:
    Daemon(const TempDir& dir, std::vector<std::string> args)
        : socket_(dir / "nbd.sock"), log_(dir / "imagesyncd.log") {
        std::vector<std::string> argv{IMAGESYNCD_PATH, "--nbd-socket",          socket_.string(),
                                      "--meta-dir",    (dir / "meta").string(), "--log-level",
                                      "debug"};
        argv.insert(argv.end(), args.begin(), args.end());
        pid_ = spawn(argv, log_);
    }
    Daemon(const Daemon&) = delete;
    Daemon& operator=(const Daemon&) = delete;
    ~Daemon() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        if (::testing::Test::HasFailure()) {
            std::fprintf(stderr, "---- imagesyncd log (%s) ----\n%s\n----\n", log_.c_str(),
                         read_file(log_).c_str());
        }
    }

    // Polls the socket until it accepts, the process dies, or the deadline passes.
    ::testing::AssertionResult wait_ready(std::chrono::seconds timeout = std::chrono::seconds(10)) {
        if (pid_ <= 0) return ::testing::AssertionFailure() << "imagesyncd did not start";
        const auto deadline = Clock::now() + timeout;
        while (Clock::now() < deadline) {
            const int fd = connect_unix(socket_);
            if (fd >= 0) {
                ::close(fd);
                return ::testing::AssertionSuccess();
            }
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                pid_ = -1;
                return ::testing::AssertionFailure() << "imagesyncd exited before it was ready:\n"
                                                     << read_file(log_);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(5));  // poll interval
        }
        return ::testing::AssertionFailure()
               << "imagesyncd was not ready within " << timeout.count() << " s:\n"
               << read_file(log_);
    }

    // Sends `signo` and waits for the exit; returns the wait status (nullopt on timeout).
    std::optional<int> stop(int signo = SIGTERM,
                            std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
        if (pid_ <= 0) return std::nullopt;
        ::kill(pid_, signo);
        auto status = wait_for(pid_, timeout);
        if (status) pid_ = -1;
        return status;
    }

    // Waits for the process to exit by itself; returns the wait status (nullopt on timeout).
    std::optional<int> wait_exit(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
        if (pid_ <= 0) return std::nullopt;
        auto status = wait_for(pid_, timeout);
        if (status) pid_ = -1;
        return status;
    }

    bool running() {
        if (pid_ <= 0) return false;
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = -1;
            return false;
        }
        return true;
    }

    pid_t pid() const { return pid_; }
    const fs::path& socket() const { return socket_; }
    std::string log() const { return read_file(log_); }
    std::string uri(const std::string& export_name) const {
        return "nbd+unix:///" + export_name + "?socket=" + socket_.string();
    }

  private:
    fs::path socket_;
    fs::path log_;
    pid_t pid_ = -1;
};

inline void write_file(const fs::path& p, const std::string& bytes) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline void make_zero_file(const fs::path& p, std::uint64_t size) {
    { std::ofstream out(p, std::ios::binary | std::ios::trunc); }
    fs::resize_file(p, size);
}

}  // namespace imagesync_test
