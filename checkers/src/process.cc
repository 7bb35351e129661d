// The process checker: some live process runs the named executable.
#include <cctype>
#include <fstream>

#include <dirent.h>
#include <fmt/format.h>
#include <unistd.h>

#include "blocking_probe.h"
#include "probes.h"

namespace vmha::checkers::detail {

namespace {

// The kernel keeps at most 15 bytes of a command name (TASK_COMM_LEN - 1).
constexpr std::size_t comm_length = 15;

std::string read_first_line(const std::string& path) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);
    return line;
}

// The state letter of /proc/PID/stat: after the last ')' (the comm itself may hold parens).
char process_state(const std::string& pid_dir) {
    const std::string stat = read_first_line(pid_dir + "/stat");
    const auto close = stat.rfind(')');
    if (close == std::string::npos || close + 2 >= stat.size()) return '?';
    return stat[close + 2];
}

std::string exe_basename(const std::string& pid_dir) {
    char buf[4096];
    const ssize_t n = ::readlink((pid_dir + "/exe").c_str(), buf, sizeof buf - 1);
    if (n <= 0) return {};
    std::string target(buf, static_cast<std::size_t>(n));
    const std::string deleted = " (deleted)";
    if (target.size() > deleted.size() &&
        target.compare(target.size() - deleted.size(), deleted.size(), deleted) == 0) {
        target.resize(target.size() - deleted.size());
    }
    const auto slash = target.rfind('/');
    return slash == std::string::npos ? target : target.substr(slash + 1);
}

}  // namespace

bool process_exists(const std::string& name) {
    DIR* proc = ::opendir("/proc");
    if (proc == nullptr) return false;
    bool found = false;
    while (const dirent* entry = ::readdir(proc)) {
        if (std::isdigit(static_cast<unsigned char>(entry->d_name[0])) == 0) continue;
        const std::string dir = std::string("/proc/") + entry->d_name;
        // comm holds at most 15 bytes, so a longer name can only match the executable's.
        const bool match = (name.size() <= comm_length && read_first_line(dir + "/comm") == name) ||
                           exe_basename(dir) == name;
        if (!match) continue;
        if (process_state(dir) == 'Z') continue;  // exited, not yet reaped
        found = true;
        break;
    }
    ::closedir(proc);
    return found;
}

std::unique_ptr<Probe> make_process_probe(boost::asio::any_io_executor executor,
                                          boost::asio::thread_pool& blocking, std::string process) {
    return std::make_unique<BlockingProbe>(std::move(executor), blocking, [process] {
        if (process_exists(process)) {
            return make_result(Verdict::healthy, fmt::format("process \"{}\" runs", process));
        }
        return make_result(Verdict::failed,
                           fmt::format("no process \"{}\" runs on this node", process));
    });
}

}  // namespace vmha::checkers::detail
