// The vmha admin CLI's verbs. Each returns the process exit status (docs/admin-protocol.md,
// `vmha --help`).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace vmha::cli {

// Exit statuses shared by all verbs.
enum Exit : int {
    exit_ok = 0,          // success; for `config check`: every file is valid
    exit_invalid = 1,     // `config check`: at least one error-level finding
    exit_unreadable = 2,  // `config check`: a file could not be read at all
    exit_refused = 1,     // admin verbs: vmhad refused, or the command failed (reason printed)
    exit_unreachable = 2, // admin verbs: vmhad could not be reached or did not answer
    exit_differences = 3, // `verify`: the copies differ
    exit_usage = 64,      // bad command line, or an unconfirmed `prim --force` (as sysexits' EX_USAGE)
};

// `vmha state MODULE`: SafeKit's codes for scripts.
enum StateExit : int {
    state_stop = 0,
    state_wait = 1,
    state_alone = 2,
    state_prim = 3,
    state_second = 4,
    state_unreachable = 5,  // vmhad could not be reached or did not answer
    state_refused = 6,      // vmhad refused (no such module)
};

struct ConfigCheckOptions {
    std::vector<std::string> files;
    bool json = false;
    bool quiet = false;  // print only findings, no per-file summary
};

int config_check(const ConfigCheckOptions& options);

// Verbs that ask vmhad over its admin socket (docs/admin-protocol.md).
struct AdminOptions {
    std::string socket;        // --socket, else $VMHA_ADMIN_SOCKET, else /run/vmha/admin.sock
    long long timeout_seconds = 0;  // 0: the verb's default (status 10 s, commands 15 min, verify 6 h)
    bool json = false;         // --json: stable JSON on stdout instead of tables and sentences
};

// `vmha status [MODULE]`: the table, or the result object as JSON.
int admin_status(const AdminOptions& options, const std::string& module);
// `vmha state MODULE`: prints the state, exits with StateExit.
int admin_state(const AdminOptions& options, const std::string& module);
// `vmha start|stop|restart|swap|second MODULE`.
int admin_command(const AdminOptions& options, const std::string& verb, const std::string& module);
// `vmha prim MODULE [--force [--yes]]`.
int admin_prim(const AdminOptions& options, const std::string& module, bool force, bool yes);
// `vmha failover on|off [MODULE]`.
int admin_failover(const AdminOptions& options, bool on, const std::string& module);
// `vmha resync MODULE [--full] [--watch]`, `vmha verify MODULE [--mark] [--watch]`.
int admin_resync(const AdminOptions& options, const std::string& module, bool full, bool watch);
int admin_verify(const AdminOptions& options, const std::string& module, bool mark, bool watch);
// `vmha swap MODULE [--at WHEN [--to NODE]]`: now (as admin_command), or scheduled.
int admin_swap(const AdminOptions& options, const std::string& module, const std::string& at, const std::string& to);
// `vmha schedule [MODULE] [--cancel ID]`.
int admin_schedule(const AdminOptions& options, const std::string& module, const std::string& cancel);
// `vmha log MODULE [-n N] [--follow]`.
int admin_log(const AdminOptions& options, const std::string& module, std::size_t lines, bool follow);

}  // namespace vmha::cli
