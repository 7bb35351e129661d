// `vmha status` (a table of this node's modules, or vmhad's status object as JSON) and `vmha
// state` (one module's state as SafeKit's exit codes, for scripts).
#include <unistd.h>

#include <algorithm>
#include <iostream>

#include <fmt/format.h>

#include <vmha/human.h>

#include "session.h"

namespace vmha::cli {
namespace {

// SafeKit's colours: STOP grey, WAIT red, ALONE and PRIM green, SECOND orange.
const char* state_colour(const std::string& state) {
    if (state == "PRIM" || state == "ALONE") return "\033[32m";
    if (state == "SECOND") return "\033[38;5;208m";
    if (state == "WAIT") return "\033[31m";
    if (state == "STOP") return "\033[90m";
    return "";
}

std::string resync_text(const nlohmann::json& module) {
    const auto& rep = module.contains("replication") ? module["replication"] : nlohmann::json();
    if (module.contains("verify") && module["verify"].is_object()) {
        return fmt::format("verify: {} compared", human_bytes(num(module["verify"], "compared_bytes")));
    }
    if (!rep.is_object() || !rep.contains("resync") || !rep["resync"].is_object()) return "-";
    const auto& r = rep["resync"];
    const auto total = num(r, "bytes_total");
    const auto done = std::min(num(r, "bytes_done"), total);
    const double pct = total ? 100.0 * static_cast<double>(done) / static_cast<double>(total) : 100.0;
    const auto eta = num(r, "eta_seconds");
    return fmt::format("{:.1f}% of {}, ETA {}:{:02}", pct, human_bytes(total), eta / 60, eta % 60);
}

void print_status_table(const nlohmann::json& result, bool colour) {
    std::cout << fmt::format("node {}\n", str(result, "node"));
    struct Row {
        std::string name, state, reason, data, peer, vm, failover, resync;
    };
    std::vector<Row> rows;
    const auto modules = result.contains("modules") && result["modules"].is_array()
                             ? result["modules"]
                             : nlohmann::json::array();
    for (const auto& m : modules) {
        const auto peer = m.contains("peer") ? m["peer"] : nlohmann::json();
        const auto vm = m.contains("vm") ? m["vm"] : nlohmann::json();
        const bool failover = !m.contains("failover") || !m["failover"].is_boolean() || m["failover"].get<bool>();
        rows.push_back({str(m, "name"), str(m, "state"), str(m, "reason"), str(m, "data_state"),
                        peer.is_object() ? fmt::format("{} {} ({})", str(peer, "node"),
                                                       str(peer, "state"), str(peer, "data_state"))
                                         : "-",
                        vm.is_object() ? str(vm, "state") : "-", failover ? "on" : "off", resync_text(m)});
    }
    Row head{"MODULE", "STATE", "REASON", "DATA", "PEER", "VM", "FAILOVER", "RESYNC"};
    auto width = [&](std::string Row::*field) {
        std::size_t w = (head.*field).size();
        for (const auto& r : rows) w = std::max(w, (r.*field).size());
        return w;
    };
    const std::size_t wn = width(&Row::name), ws = width(&Row::state), wr = width(&Row::reason),
                      wd = width(&Row::data), wp = width(&Row::peer), wv = width(&Row::vm),
                      wf = width(&Row::failover);
    auto line = [&](const Row& r, bool is_head) {
        std::string state = fmt::format("{:<{}}", r.state, ws);
        if (colour && !is_head && *state_colour(r.state) != '\0') {
            state = state_colour(r.state) + state + "\033[0m";
        }
        std::cout << fmt::format("{:<{}}  {}  {:<{}}  {:<{}}  {:<{}}  {:<{}}  {:<{}}  {}\n", r.name, wn, state,
                                 r.reason, wr, r.data, wd, r.peer, wp, r.vm, wv, r.failover, wf, r.resync);
    };
    line(head, true);
    for (const auto& r : rows) line(r, false);
    if (rows.empty()) std::cout << "(no modules configured)\n";
}

}  // namespace

int admin_status(const AdminOptions& o, const std::string& module) {
    nlohmann::json request = {{"verb", "status"}};
    if (!module.empty()) request["module"] = module;
    const Answer a = call(o, std::move(request), status_timeout);
    if (a.exit != exit_ok) return report(o, a);
    if (o.json) {
        std::cout << a.result.dump(2) << '\n';
    } else {
        print_status_table(a.result, ::isatty(STDOUT_FILENO) != 0);
    }
    return exit_ok;
}

int admin_state(const AdminOptions& o, const std::string& module) {
    const Answer a = call(o, {{"verb", "status"}, {"module", module}}, status_timeout);
    if (a.exit != exit_ok) {
        (void)report(o, a);
        return a.exit == exit_unreachable ? state_unreachable : state_refused;
    }
    const nlohmann::json modules = a.result.value("modules", nlohmann::json::array());
    const nlohmann::json m = modules.is_array() && !modules.empty() ? modules[0] : nlohmann::json::object();
    const std::string state = str(m, "state", "");
    int code = state_refused;
    if (state == "STOP") code = state_stop;
    else if (state == "WAIT") code = state_wait;
    else if (state == "ALONE") code = state_alone;
    else if (state == "PRIM") code = state_prim;
    else if (state == "SECOND") code = state_second;
    if (o.json) {
        std::cout << nlohmann::json{{"module", module}, {"node", str(a.result, "node")}, {"state", state},
                                    {"reason", str(m, "reason", "")}, {"exit_code", code}}
                         .dump(2)
                  << '\n';
    } else {
        std::cout << fmt::format("{} on {}: {} ({})\n", module, str(a.result, "node"), state, str(m, "reason", ""));
    }
    return code;
}

}  // namespace vmha::cli
