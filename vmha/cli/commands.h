// The vmha admin CLI's verbs. Each returns the process exit status (docs/operator-guide.md).
#pragma once

#include <string>
#include <vector>

namespace vmha::cli {

// Exit statuses shared by all verbs.
enum Exit : int {
    exit_ok = 0,          // success; for `config check`: every file is valid
    exit_invalid = 1,     // `config check`: at least one error-level finding
    exit_unreadable = 2,  // `config check`: a file could not be read at all
    exit_refused = 1,     // admin verbs: vmhad refused (its error is printed)
    exit_unreachable = 2, // admin verbs: vmhad could not be reached or did not answer
    exit_usage = 64,      // bad command line (as sysexits' EX_USAGE)
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
    long long timeout_seconds = 0;  // 0: the verb's default (status 10 s, commands 15 min)
};

// `vmha status [MODULE] [--json]`: the table, or the result object as JSON.
int admin_status(const AdminOptions& options, const std::string& module, bool json);
// `vmha start|stop|swap MODULE`.
int admin_command(const AdminOptions& options, const std::string& verb, const std::string& module);

}  // namespace vmha::cli
