// vmha-witness: grants per-module leases to one node of a pair at a time (docs/witness.md).
// Runs in the foreground, logs to stderr, stops cleanly on SIGTERM or SIGINT.
#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <spdlog/spdlog.h>

#include <vmha/log.h>

#include "server.h"
#include "witness_config.h"

int main(int argc, char** argv) {
    CLI::App app{"vmha-witness: the lease arbiter of vmha node pairs, for a third machine",
                 "vmha-witness"};
    std::string config_file = "/etc/vmha/witness.yaml";
    std::string log_level = "info";
    app.add_option("-c,--config", config_file, "The witness file (YAML)")->capture_default_str();
    app.add_option("--log-level", log_level, "error|warn|info|debug|trace")
        ->capture_default_str()
        ->check([](const std::string& v) {
            return vmha::parse_log_level(v) ? std::string() : "unknown log level \"" + v + "\"";
        });
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const int rc = app.exit(e);
        return e.get_exit_code() == 0 ? rc : 64;
    }
    vmha::init_logging("vmha-witness", *vmha::parse_log_level(log_level));
    auto config = vmha::witness::load_witness_config(config_file);
    if (!config) {
        spdlog::error("{}", config.error().message);
        return 1;
    }
    boost::asio::io_context io;
    auto server = vmha::witness::Server::create(io, std::move(*config));
    if (!server) {
        spdlog::error("{}", server.error().message);
        return 1;
    }
    boost::asio::signal_set signals(io, SIGTERM, SIGINT);
    signals.async_wait([&](const boost::system::error_code& ec, int signo) {
        if (ec) return;
        spdlog::info("signal {} received: stopping", signo);
        (*server)->stop();
        io.stop();
    });
    (*server)->start();
    io.run();
    spdlog::info("stopped");
    return 0;
}
