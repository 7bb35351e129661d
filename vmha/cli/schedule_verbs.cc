// `vmha swap MODULE --at WHEN [--to NODE]` and `vmha schedule [MODULE] [--cancel ID]`: one-off
// swaps for later, and the plan of each module (its scheduled failback times, its one-off swaps,
// and what became of the last jobs). Times are shown in the module's time zone.
#include <iostream>

#include <fmt/format.h>

#include "session.h"

namespace vmha::cli {
namespace {

std::string local(const nlohmann::json& when) { return str(when, "local"); }

void print_plan(const nlohmann::json& m) {
    std::cout << fmt::format("{} on {} ({}), time zone {}\n", str(m, "module"), str(m, "node"), str(m, "state"),
                             str(m, "timezone"));
    const std::string mode = str(m, "mode");
    if (m.contains("failback") && m["failback"].is_object()) {
        const auto& f = m["failback"];
        std::string next;
        for (const auto& t : f.value("next", nlohmann::json::array())) next += (next.empty() ? "" : ", ") + local(t);
        std::cout << fmt::format("  failback: scheduled \"{}\" to {}; next: {}\n", str(f, "schedule"), str(f, "to"),
                                 next.empty() ? "never" : next);
    } else if (mode == "automatic") {
        std::cout << fmt::format("  failback: automatic, to {}\n", str(m, "preferred_node"));
    } else {
        std::cout << "  failback: manual\n";
    }
    const auto swaps = m.value("swaps", nlohmann::json::array());
    if (swaps.empty()) {
        std::cout << "  no one-off swaps\n";
    } else {
        std::cout << fmt::format("  {:<9} {:<26} {:<8} {:<10} {}\n", "ID", "WHEN", "TO", "STATE", "BY / OUTCOME");
        for (const auto& s : swaps) {
            const std::string outcome = str(s, "outcome");
            const std::string detail =
                outcome == "pending" ? str(s, "by")
                                     : fmt::format("{} (on {})", str(s, "reason"), str(s, "settled_by"));
            std::cout << fmt::format("  {:<9} {:<26} {:<8} {:<10} {}\n", str(s, "id"), local(s.value("at", nlohmann::json())),
                                     str(s, "to"), outcome, detail);
        }
    }
    const auto history = m.value("history", nlohmann::json::array());
    if (!history.empty()) {
        std::cout << "  recent:\n";
        const std::size_t from = history.size() > 5 ? history.size() - 5 : 0;
        for (std::size_t i = from; i < history.size(); ++i) {
            const auto& e = history[i];
            std::cout << fmt::format("    {}  {}: {}: {}\n", local(e.value("due", nlohmann::json())), str(e, "job"),
                                     str(e, "outcome"), str(e, "reason"));
        }
    }
}

}  // namespace

int admin_swap(const AdminOptions& o, const std::string& module, const std::string& at, const std::string& to) {
    if (at.empty() && !to.empty()) {
        const Answer usage{exit_usage, {}, "invalid_argument", "--to goes with --at (a swap now goes to the peer)"};
        return report(o, usage);
    }
    nlohmann::json request = {{"verb", "swap"}, {"module", module}};
    if (!at.empty()) request["at"] = at;
    if (!to.empty()) request["to"] = to;
    const Answer a = call(o, std::move(request), at.empty() ? std::chrono::milliseconds(command_timeout)
                                                            : std::chrono::milliseconds(status_timeout));
    if (a.exit != exit_ok) return report(o, a);
    print_result(o, a.result);
    return exit_ok;
}

int admin_schedule(const AdminOptions& o, const std::string& module, const std::string& cancel) {
    nlohmann::json request = {{"verb", "schedule"}};
    if (!module.empty()) request["module"] = module;
    if (!cancel.empty()) {
        if (module.empty()) {
            const Answer usage{exit_usage, {}, "invalid_argument", "--cancel needs the MODULE"};
            return report(o, usage);
        }
        request["cancel"] = cancel;
    }
    const Answer a = call(o, std::move(request), status_timeout);
    if (a.exit != exit_ok) return report(o, a);
    if (o.json || !cancel.empty()) {
        print_result(o, a.result);
        return exit_ok;
    }
    const auto modules = a.result.value("modules", nlohmann::json::array());
    if (modules.empty()) std::cout << fmt::format("no modules on {}\n", str(a.result, "node"));
    bool first = true;
    for (const auto& m : modules) {
        if (!first) std::cout << '\n';
        first = false;
        print_plan(m);
    }
    return exit_ok;
}

}  // namespace vmha::cli
