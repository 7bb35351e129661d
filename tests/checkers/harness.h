// What every checkers test needs: an io_context run on the test thread (so start/stop happen
// on the executor, as in vmhad), a blocking pool, and the reports collected.
#pragma once

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <dirent.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <checkers/checker.h>
#include <checkers/factory.h>

namespace vmha::checkers::test {

using namespace std::chrono_literals;
namespace asio = boost::asio;

struct Harness {
    asio::io_context io;
    asio::executor_work_guard<asio::io_context::executor_type> guard{io.get_executor()};
    asio::thread_pool pool{2};  // destroyed (joined) before io
    std::vector<CheckResult> reports;

    CheckerContext context() {
        CheckerContext c;
        c.executor = io.get_executor();
        c.blocking = &pool;
        return c;
    }
    Checker::Report recorder() {
        return [this](const CheckResult& r) {
            reports.push_back(r);
        };
    }
    // Runs the loop until pred() holds; false when `limit` passed first.
    bool run_until(const std::function<bool()>& pred, std::chrono::milliseconds limit = 20s) {
        const auto deadline = std::chrono::steady_clock::now() + limit;
        while (!pred()) {
            if (std::chrono::steady_clock::now() > deadline) return false;
            io.run_one_for(10ms);
        }
        return true;
    }
    bool wait_reports(std::size_t n, std::chrono::milliseconds limit = 20s) {
        return run_until([&] { return reports.size() >= n; }, limit);
    }
    // Runs the loop for a while (to show that nothing more is reported).
    void run_for(std::chrono::milliseconds d) {
        const auto until = std::chrono::steady_clock::now() + d;
        while (std::chrono::steady_clock::now() < until) io.run_one_for(5ms);
    }
};

inline config::Checker checker_config(config::CheckerKind kind, std::string name = "test") {
    config::Checker c;
    c.name = std::move(name);
    c.kind = kind;
    c.interval = 50ms;
    c.timeout = 2s;
    return c;
}

inline std::unique_ptr<Checker> make_or_fail(const config::Checker& c, CheckerContext ctx) {
    auto made = make_checker(c, std::move(ctx));
    if (!made) ADD_FAILURE() << made.error().message;
    return made ? std::move(made).value() : nullptr;
}

inline std::string unique_suffix() {
    std::random_device rd;
    return std::to_string(rd() % 1000000);
}

// A private temporary directory, removed with everything in it.
struct TempDir {
    std::filesystem::path path;
    TempDir() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "vmha-ck-XXXXXX").string();
        if (::mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed";
        path = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
};

// A copy of /bin/sleep under `name`, so that its processes are recognisably ours.
inline std::filesystem::path copy_sleep(const TempDir& dir, const std::string& name) {
    const auto to = dir.path / name;
    std::filesystem::copy_file("/bin/sleep", to);
    std::filesystem::permissions(to, std::filesystem::perms::owner_all);
    return to;
}

// PIDs of every process (zombies included) whose comm is `comm`.
inline std::vector<pid_t> pids_with_comm(const std::string& comm) {
    std::vector<pid_t> out;
    DIR* proc = ::opendir("/proc");
    if (proc == nullptr) return out;
    while (const dirent* e = ::readdir(proc)) {
        const char* n = e->d_name;
        if (*n < '0' || *n > '9') continue;
        std::ifstream in(std::string("/proc/") + n + "/comm");
        std::string line;
        if (std::getline(in, line) && line == comm) out.push_back(std::atoi(n));
    }
    ::closedir(proc);
    return out;
}

// Spawns argv; the caller kills and reaps it (Child does on destruction).
struct Child {
    pid_t pid = -1;
    explicit Child(const std::vector<std::string>& argv) {
        std::vector<char*> args;
        for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        if (::posix_spawn(&pid, args[0], nullptr, nullptr, args.data(), environ) != 0) pid = -1;
    }
    void kill_and_reap() {
        if (pid <= 0) return;
        ::kill(pid, SIGKILL);
        int status = 0;
        ::waitpid(pid, &status, 0);
        pid = -1;
    }
    ~Child() { kill_and_reap(); }
};

}  // namespace vmha::checkers::test
