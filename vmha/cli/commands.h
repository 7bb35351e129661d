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
    exit_usage = 64,      // bad command line (as sysexits' EX_USAGE)
};

struct ConfigCheckOptions {
    std::vector<std::string> files;
    bool json = false;
    bool quiet = false;  // print only findings, no per-file summary
};

int config_check(const ConfigCheckOptions& options);

}  // namespace vmha::cli
