// Test helpers for vmha-virsh: run a command with its stdout and stderr kept apart (to compare
// them byte for byte with virsh's), with a deadline; a private temporary directory.
#pragma once

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace virsh_test {

namespace fs = std::filesystem;

inline std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

struct Output {
    int exit_code = -1;  // -1: killed at the deadline
    std::string out;
    std::string err;
};

inline std::ostream& operator<<(std::ostream& os, const Output& r) {
    return os << "exit " << r.exit_code << "\n--- stdout ---\n"
              << r.out << "--- stderr ---\n"
              << r.err;
}

// Runs argv to completion (killed after `timeout`), stdout and stderr to files in `scratch`.
inline Output run(const std::vector<std::string>& argv, const fs::path& scratch,
                  std::chrono::seconds timeout = std::chrono::seconds(120)) {
    static int counter = 0;
    const fs::path out = scratch / ("run-" + std::to_string(++counter) + ".out");
    const fs::path err = scratch / ("run-" + std::to_string(counter) + ".err");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = -1;
    Output r;
    const int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
        r.err = "cannot start " + argv[0];
        return r;
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    int status = 0;
    for (;;) {
        const pid_t w = ::waitpid(pid, &status, WNOHANG);
        if (w == pid) break;
        if (std::chrono::steady_clock::now() > deadline) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, &status, 0);
            r.out = read_file(out);
            r.err = read_file(err) + "\n(killed at the deadline)";
            return r;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = read_file(out);
    r.err = read_file(err);
    return r;
}

// Drops the lines that start with `prefix` (a value that changes between two runs, such as a
// running domain's "CPU time:").
inline std::string without_lines(const std::string& text, const std::string& prefix) {
    std::string result;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        if (!line.starts_with(prefix)) result += line + "\n";
    }
    return result;
}

inline bool have_program(const std::string& name) {
    const char* path = std::getenv("PATH");
    std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
    std::istringstream in(dirs);
    for (std::string dir; std::getline(in, dir, ':');) {
        if (::access((fs::path(dir) / name).c_str(), X_OK) == 0) return true;
    }
    return false;
}

}  // namespace virsh_test
