// vmha: the admin CLI. Tools print; see docs/operator-guide.md for verbs and exit codes.
#include <iostream>

#include <CLI/CLI.hpp>

#include <vmha/log.h>

#include "commands.h"

int main(int argc, char** argv) {
    CLI::App app{"vmha: high availability for virtual machines — admin tool", "vmha"};
    app.require_subcommand(1);
    app.set_version_flag("--version", std::string("vmha ") + VMHA_VERSION);
    std::string log_level = "warn";
    app.add_option("--log-level", log_level, "Diagnostics on stderr: error|warn|info|debug|trace")
        ->check([](const std::string& v) {
            return vmha::parse_log_level(v) ? std::string() : "unknown log level \"" + v + "\"";
        });

    auto* config = app.add_subcommand("config", "Work with module and node configuration files");
    config->require_subcommand(1);
    vmha::cli::ConfigCheckOptions check_options;
    auto* check = config->add_subcommand(
        "check", "Check files; print every finding as file:line:column: key: reason.\n"
                 "Exit status: 0 valid, 1 invalid, 2 a file could not be read, 64 usage.");
    check->add_option("FILE", check_options.files, "Module or node files")->required();
    check->add_flag("--json", check_options.json, "Print the findings as JSON");
    check->add_flag("-q,--quiet", check_options.quiet, "Print only the findings");

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        app.exit(e);
        return vmha::cli::exit_usage;
    }
    vmha::init_logging("vmha", *vmha::parse_log_level(log_level));

    if (*check) return vmha::cli::config_check(check_options);
    return vmha::cli::exit_usage;
}
