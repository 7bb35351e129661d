// `vmha start|stop|restart|swap|second|prim|failover`: commands that change where and whether a
// module runs. vmhad answers once the command is carried out (swap: once the VM runs on the
// peer; restart: once the VM runs again), or refuses with its reason.
#include <unistd.h>

#include <iostream>
#include <string>

#include <fmt/format.h>

#include "session.h"

namespace vmha::cli {

int admin_command(const AdminOptions& o, const std::string& verb, const std::string& module) {
    const Answer a = call(o, {{"verb", verb}, {"module", module}}, command_timeout);
    if (a.exit != exit_ok) return report(o, a);
    print_result(o, a.result);
    return exit_ok;
}

int admin_prim(const AdminOptions& o, const std::string& module, bool force, bool yes) {
    nlohmann::json preview;
    if (force) {
        // Say what will be discarded, and have it confirmed, before anything changes.
        const Answer p = call(o, {{"verb", "prim"}, {"module", module}, {"force", true}, {"dry_run", true}},
                              status_timeout);
        if (p.exit != exit_ok) return report(o, p);
        preview = p.result.contains("preview") ? p.result["preview"] : nlohmann::json::object();
        const auto discards = preview.contains("discards") && preview["discards"].is_array()
                                  ? preview["discards"]
                                  : nlohmann::json::array();
        std::ostream& out = o.json ? std::cerr : std::cout;
        out << fmt::format("vmha prim --force {}: {} runs the VM on its own {} copy.\n", module,
                           str(preview, "node"), str(preview, "data_state"));
        for (const auto& d : discards) {
            if (d.is_string()) out << "  - discards: " << d.get<std::string>() << '\n';
        }
        if (!yes) {
            if (::isatty(STDIN_FILENO) == 0) {
                const Answer refused{exit_usage, {}, "not_confirmed",
                                     "prim --force discards data and needs a confirmation: run it on a "
                                     "terminal, or add --yes"};
                return report(o, refused);
            }
            out << "Type \"yes\" to go on: " << std::flush;
            std::string line;
            std::getline(std::cin, line);
            if (line != "yes") {
                const Answer refused{exit_refused, {}, "not_confirmed", "not confirmed; nothing changed"};
                return report(o, refused);
            }
        }
    }
    nlohmann::json request = {{"verb", "prim"}, {"module", module}};
    if (force) request["force"] = true;
    const Answer a = call(o, std::move(request), command_timeout);
    if (a.exit != exit_ok) return report(o, a);
    nlohmann::json result = a.result;
    if (force) result["preview"] = preview;
    print_result(o, result);
    return exit_ok;
}

int admin_failover(const AdminOptions& o, bool on, const std::string& module) {
    nlohmann::json request = {{"verb", "failover"}, {"on", on}};
    if (!module.empty()) request["module"] = module;
    const Answer a = call(o, std::move(request), status_timeout + std::chrono::seconds(15));
    if (a.exit != exit_ok) return report(o, a);
    // Each node keeps the setting; a node that could not be told keeps its own.
    bool everywhere = true;
    const nlohmann::json modules = a.result.value("modules", nlohmann::json::array());
    for (const auto& m : modules) {
        std::string where;
        const nlohmann::json nodes = m.value("nodes", nlohmann::json::object());
        for (const auto& [node, outcome] : nodes.items()) {
            const std::string text = outcome.is_string() ? outcome.get<std::string>() : "?";
            if (text != "set") everywhere = false;
            where += fmt::format("{}{}: {}", where.empty() ? "" : ", ", node, text);
        }
        if (!o.json) {
            std::cout << fmt::format("module \"{}\": failover {} ({})\n", str(m, "module"), on ? "on" : "off", where);
        }
    }
    if (o.json) print_result(o, a.result);
    if (!everywhere) {
        std::cerr << "vmha: the setting did not reach every node; run the command again once both "
                     "vmhad are up\n";
        return exit_refused;
    }
    return exit_ok;
}

}  // namespace vmha::cli
