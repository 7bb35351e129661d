// vmha: the admin CLI. Tools print; see docs/admin-protocol.md for verbs, JSON and exit codes.
#include <iostream>

#include <CLI/CLI.hpp>

#include <vmha/log.h>

#include "admin_client.h"
#include "commands.h"

namespace {

constexpr const char* kExitCodes =
    "Exit status (admin verbs): 0 done, 1 vmhad refused or the command failed (the reason is\n"
    "printed; with --json also {\"ok\":false,\"code\",\"error\"} on stdout), 2 vmhad unreachable or\n"
    "no answer in time, 3 verify found differences, 64 bad command line or an unconfirmed\n"
    "prim --force.\n"
    "`vmha state MODULE` exits with the state: STOP 0, WAIT 1, ALONE 2, PRIM 3, SECOND 4;\n"
    "5 vmhad unreachable, 6 refused (no such module), 64 bad command line.\n"
    "`vmha config check`: 0 valid, 1 invalid, 2 a file could not be read, 64 bad command line.\n";

}  // namespace

int main(int argc, char** argv) {
    using namespace vmha::cli;
    CLI::App app{"vmha: high availability for virtual machines — admin tool.\n"
                 "Verbs act on this node's vmhad; those that act where the VM runs (restart, swap,\n"
                 "resync, verify) go to the peer's vmhad when the VM runs there.",
                 "vmha"};
    app.require_subcommand(1);
    app.footer(kExitCodes);
    app.set_version_flag("--version", std::string("vmha ") + VMHA_VERSION);
    std::string log_level = "warn";
    app.add_option("--log-level", log_level, "Diagnostics on stderr: error|warn|info|debug|trace")
        ->check([](const std::string& v) {
            return vmha::parse_log_level(v) ? std::string() : "unknown log level \"" + v + "\"";
        });

    auto* config = app.add_subcommand("config", "Work with module and node configuration files");
    config->require_subcommand(1);
    ConfigCheckOptions check_options;
    auto* check = config->add_subcommand(
        "check", "Check files; print every finding as file:line:column: key: reason.\n"
                 "Exit status: 0 valid, 1 invalid, 2 a file could not be read, 64 usage.");
    check->add_option("FILE", check_options.files, "Module or node files")->required();
    check->add_flag("--json", check_options.json, "Print the findings as JSON");
    check->add_flag("-q,--quiet", check_options.quiet, "Print only the findings");

    AdminOptions admin;
    admin.socket = default_admin_socket;
    app.add_option("--socket", admin.socket, "vmhad's admin socket")
        ->envname("VMHA_ADMIN_SOCKET")
        ->capture_default_str();
    app.add_option("--timeout", admin.timeout_seconds,
                   "Seconds to wait for vmhad's answer (default: status 10, commands 900, verify 21600)")
        ->check(CLI::PositiveNumber);

    std::string module;
    auto admin_verb = [&](const char* name, const std::string& help, bool module_required) {
        auto* sub = app.add_subcommand(name, help);
        auto* opt = sub->add_option("MODULE", module, module_required ? "The module" : "Only this module");
        if (module_required) opt->required();
        sub->add_flag("--json", admin.json, "Print stable JSON on stdout (docs/admin-protocol.md)");
        sub->footer(kExitCodes);
        return sub;
    };

    auto* status = admin_verb("status", "This node's modules: state and reason, data, the peer's state, the VM, "
                                        "failover, resync progress", false);
    auto* state = admin_verb("state", "Print the module's state; exit with it (STOP 0, WAIT 1, ALONE 2, PRIM 3, "
                                      "SECOND 4; 5 vmhad unreachable, 6 refused)", true);
    struct Simple {
        CLI::App* sub;
        std::string verb;
    };
    std::vector<Simple> simple;
    for (const auto& [verb, help] :
         {std::pair<const char*, const char*>{"start", "Start a stopped module on this node"},
          {"stop", "Stop the module on this node: its VM (if it runs here) and imagesyncd"},
          {"restart", "Restart the VM where it runs (graceful shutdown, then start); no failover. Refused "
                      "unless the module is PRIM or ALONE on a node"},
          {"second", "Start the module here as secondary: never run the VM here until the peer has run it"}}) {
        simple.push_back({admin_verb(verb, help, true), verb});
    }

    std::string at;
    std::string to;
    auto* swap = admin_verb("swap", "Move the VM to the other node (stop it where it runs, start it on the peer). "
                                    "Refused unless the peer is SECOND, UpToDate and in sync. With --at: at that "
                                    "time instead (kept on both nodes, across restarts; skipped with its reason "
                                    "if unsafe then)", true);
    swap->add_option("--at", at, "When: \"YYYY-MM-DD HH:MM[:SS]\" in the module's time zone "
                                 "(failback.timezone), the same ending in Z or +HH:MM, or +DURATION (\"+2h\")");
    swap->add_option("--to", to, "With --at: the node the VM moves to (default: the one not running it now)");

    std::string cancel;
    auto* schedule = admin_verb("schedule", "The plan: scheduled failback times, one-off swaps (vmha swap --at) "
                                            "and what became of the last jobs", false);
    schedule->add_option("--cancel", cancel, "Cancel this pending one-off swap (by its ID), here and on the peer");

    bool force = false;
    bool yes = false;
    auto* prim = admin_verb("prim", "Run the VM on this node (a first start, or the peer silent). Refused on data "
                                    "that is not UpToDate or older than the peer's, unless --force", true);
    prim->add_flag("--force", force, "Promote Inconsistent or Outdated data, or keep this copy in a split brain; "
                                     "says what is discarded and asks for confirmation");
    prim->add_flag("-y,--yes", yes, "Do not ask for confirmation (--force)");

    std::string on_off;
    auto* failover = app.add_subcommand("failover", "Allow (on) or forbid (off) failover to the peer, on both "
                                                    "nodes, for one module or all; kept across restarts. Off: "
                                                    "local restarts go on, the VM never moves by itself");
    failover->add_option("on|off", on_off, "on or off")->required()->check(CLI::IsMember({"on", "off"}));
    failover->add_option("MODULE", module, "Only this module (default: all)");
    failover->add_flag("--json", admin.json, "Print stable JSON on stdout");
    failover->footer(kExitCodes);

    bool full = false;
    bool watch = false;
    bool mark = false;
    auto* resync = admin_verb("resync", "Copy the dirty ranges to the peer now, on the node that runs the VM", true);
    resync->add_flag("--full", full, "Compare every chunk by checksum and copy what differs");
    resync->add_flag("--watch", watch, "Show progress until the peer is in sync");
    auto* verify = admin_verb("verify", "Compare both copies online, chunk by chunk, on the node that runs the VM; "
                                        "exit 3 when they differ", true);
    verify->add_flag("--mark", mark, "Record differing chunks dirty and resync them");
    verify->add_flag("--watch", watch, "Show progress until done");

    std::size_t lines = 50;
    bool follow = false;
    auto* log = admin_verb("log", "The module's journal on this node: transitions with rule and reason, checker "
                                  "results, commands with who ran them", true);
    log->add_option("-n,--lines", lines, "How many entries")->capture_default_str()->check(CLI::PositiveNumber);
    log->add_flag("-f,--follow", follow, "Keep printing new entries");

    std::string help_verb;
    auto* help = app.add_subcommand("help", "Help on a verb: vmha help VERB");
    help->add_option("VERB", help_verb, "The verb");

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
        return exit_usage;
    }
    vmha::init_logging("vmha", *vmha::parse_log_level(log_level));

    if (*help) {
        if (help_verb.empty()) {
            std::cout << app.help();
            return exit_ok;
        }
        try {
            std::cout << app.get_subcommand(help_verb)->help();
            return exit_ok;
        } catch (const CLI::OptionNotFound&) {
            std::cerr << "vmha: no verb \"" << help_verb << "\"; `vmha --help` lists them\n";
            return exit_usage;
        }
    }
    if (*check) return config_check(check_options);
    if (*status) return admin_status(admin, module);
    if (*state) return admin_state(admin, module);
    for (const auto& s : simple) {
        if (*s.sub) return admin_command(admin, s.verb, module);
    }
    if (*prim) {
        if (yes && !force) {
            std::cerr << "vmha: --yes goes with --force\n";
            return exit_usage;
        }
        return admin_prim(admin, module, force, yes);
    }
    if (*failover) return admin_failover(admin, on_off == "on", module);
    if (*swap) return admin_swap(admin, module, at, to);
    if (*schedule) return admin_schedule(admin, module, cancel);
    if (*resync) return admin_resync(admin, module, full, watch);
    if (*verify) return admin_verify(admin, module, mark, watch);
    if (*log) return admin_log(admin, module, lines, follow);
    return exit_usage;
}
