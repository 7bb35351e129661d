// vmha: the admin CLI. Tools print; see docs/operator-guide.md for verbs and exit codes.
#include <iostream>

#include <CLI/CLI.hpp>

#include <vmha/log.h>

#include "admin_client.h"
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

    vmha::cli::AdminOptions admin;
    admin.socket = vmha::cli::default_admin_socket;
    app.add_option("--socket", admin.socket, "vmhad's admin socket")
        ->envname("VMHA_ADMIN_SOCKET")
        ->capture_default_str();
    app.add_option("--timeout", admin.timeout_seconds,
                   "Seconds to wait for vmhad's answer (default: status 10, commands 900)")
        ->check(CLI::PositiveNumber);

    std::string status_module;
    bool status_json = false;
    auto* status = app.add_subcommand(
        "status", "Both nodes' states and reasons, data state, VM, resync progress.\n"
                  "Exit status: 0 done, 1 vmhad refused, 2 vmhad unreachable, 64 usage.");
    status->add_option("MODULE", status_module, "Only this module");
    status->add_flag("--json", status_json, "Print vmhad's result object as JSON");
    std::string command_module;
    std::vector<std::pair<CLI::App*, std::string>> commands;
    for (const auto& [verb, help] : {std::pair<const char*, const char*>{"start", "Start a stopped module"},
                                     {"stop", "Stop a module: its VM and imagesyncd on this node"},
                                     {"swap", "Move the VM to the other node (stop here, start there)"}}) {
        auto* sub = app.add_subcommand(verb, std::string(help) +
                                                 ".\nExit status: 0 done, 1 vmhad refused, 2 "
                                                 "vmhad unreachable, 64 usage.");
        sub->add_option("MODULE", command_module, "The module")->required();
        commands.emplace_back(sub, verb);
    }

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
    if (*status) return vmha::cli::admin_status(admin, status_module, status_json);
    for (const auto& [sub, verb] : commands) {
        if (*sub) return vmha::cli::admin_command(admin, verb, command_module);
    }
    return vmha::cli::exit_usage;
}
