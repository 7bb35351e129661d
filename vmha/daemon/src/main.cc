// vmhad: the vmha node daemon (docs/architecture.md). Runs in the foreground; logs to stderr.
#include <iostream>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <vmha/log.h>

#include "daemon.h"

int main(int argc, char** argv) {
    CLI::App app{"vmhad: the vmha node daemon — runs the mirror modules of this node", "vmhad"};
    vmha::daemon::DaemonOptions options;
    std::string node_file = options.node_file.string();
    std::string imagesyncd;
    std::string log_level = "info";
    app.add_option("-c,--config", node_file, "The node file")->capture_default_str();
    app.add_option("--imagesyncd", imagesyncd, "The imagesyncd binary (default: next to vmhad)");
    app.add_option("--log-level", log_level, "error|warn|info|debug|trace")
        ->check([](const std::string& v) {
            return vmha::parse_log_level(v) ? std::string() : "unknown log level \"" + v + "\"";
        });
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const int rc = app.exit(e);
        return e.get_exit_code() == 0 ? rc : 64;
    }
    vmha::init_logging("vmhad", *vmha::parse_log_level(log_level));
    options.node_file = node_file;
    options.imagesyncd = imagesyncd;
    vmha::daemon::Daemon daemon(options);
    if (auto st = daemon.start(); !st) {
        spdlog::error("{}", st.error().message);
        return 1;
    }
    return daemon.run();
}
