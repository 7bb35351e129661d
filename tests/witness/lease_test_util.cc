#include "lease_test_util.h"

#include <arpa/inet.h>

namespace lease_test {

void make_certs(const fs::path& dir) {
    using imagesync_test::run_tool;
    auto run = [&](std::vector<std::string> argv) {
        auto r = run_tool(argv, dir, std::chrono::seconds(60));
        ASSERT_EQ(r.exit_code, 0) << imagesync_test::describe(argv) << "\n" << r.output;
    };
    run({"sh", VMHA_CERTS_SCRIPT, "ca", dir.string()});
    for (const char* n : {"hv1", "hv2", "hv3", "hv4", "witness1"})
        run({"sh", VMHA_CERTS_SCRIPT, "node", dir.string(), n});
    run({"sh", VMHA_CERTS_SCRIPT, "ca", (dir / "other").string()});
    run({"sh", VMHA_CERTS_SCRIPT, "node", (dir / "other").string(), "hv2"});
}

::testing::AssertionResult wait_port(pid_t pid, std::uint16_t port, const fs::path& log) {
    const auto deadline = Clock::now() + 20s;
    while (Clock::now() < deadline) {
        const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(port);
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
        ::close(fd);
        if (ok) return ::testing::AssertionSuccess();
        int status = 0;
        if (::waitpid(pid, &status, WNOHANG) == pid) {
            return ::testing::AssertionFailure() << "the process exited before it listened:\n"
                                                 << imagesync_test::read_file(log);
        }
        std::this_thread::sleep_for(10ms);  // poll interval
    }
    return ::testing::AssertionFailure() << "nothing listened on port " << port << " within 20 s:\n"
                                         << imagesync_test::read_file(log);
}

Process::Process(std::vector<std::string> argv, fs::path log)
    : log_(std::move(log)), name_(argv.at(0)) {
    pid_ = imagesync_test::spawn(argv, log_);
}

Process::~Process() {
    if (pid_ > 0) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
    }
    if (::testing::Test::HasFailure()) {
        std::fprintf(stderr, "---- %s log (%s) ----\n%s\n----\n", name_.c_str(), log_.c_str(),
                     imagesync_test::read_file(log_).c_str());
    }
}

std::optional<int> Process::stop(int signo) {
    if (pid_ <= 0) return std::nullopt;
    ::kill(pid_, signo);
    auto status = imagesync_test::wait_for(pid_, 20s);
    if (status) pid_ = -1;
    return status;
}

std::optional<int> Process::wait_exit(std::chrono::milliseconds timeout) {
    if (pid_ <= 0) return std::nullopt;
    auto status = imagesync_test::wait_for(pid_, timeout);
    if (status) pid_ = -1;
    return status;
}

bool Process::running() {
    if (pid_ <= 0) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
    }
    return true;
}

}  // namespace lease_test
