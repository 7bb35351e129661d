// `vmha status|start|stop|swap`: ask vmhad over its admin socket and print the answer.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>

#include <fmt/format.h>

#include <vmha/human.h>
#include <nlohmann/json.hpp>

#include "admin_client.h"
#include "commands.h"

namespace vmha::cli {
namespace {

std::string str(const nlohmann::json& j, const char* key, const char* fallback = "-") {
    if (j.is_object() && j.contains(key) && j[key].is_string()) return j[key].get<std::string>();
    return fallback;
}

std::uint64_t num(const nlohmann::json& j, const char* key) {
    if (j.is_object() && j.contains(key) && j[key].is_number()) return j[key].get<std::uint64_t>();
    return 0;
}

using vmha::human_bytes;

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
        std::string name, state, reason, data, peer, vm, resync;
    };
    std::vector<Row> rows;
    const auto modules = result.contains("modules") && result["modules"].is_array()
                             ? result["modules"]
                             : nlohmann::json::array();
    for (const auto& m : modules) {
        const auto peer = m.contains("peer") ? m["peer"] : nlohmann::json();
        const auto vm = m.contains("vm") ? m["vm"] : nlohmann::json();
        rows.push_back({str(m, "name"), str(m, "state"), str(m, "reason"), str(m, "data_state"),
                        peer.is_object() ? fmt::format("{} {} ({})", str(peer, "node"),
                                                       str(peer, "state"), str(peer, "data_state"))
                                         : "-",
                        vm.is_object() ? str(vm, "state") : "-", resync_text(m)});
    }
    Row head{"MODULE", "STATE", "REASON", "DATA", "PEER", "VM", "RESYNC"};
    auto width = [&](std::string Row::*field) {
        std::size_t w = (head.*field).size();
        for (const auto& r : rows) w = std::max(w, (r.*field).size());
        return w;
    };
    const std::size_t wn = width(&Row::name), ws = width(&Row::state), wr = width(&Row::reason),
                      wd = width(&Row::data), wp = width(&Row::peer), wv = width(&Row::vm);
    auto line = [&](const Row& r, bool is_head) {
        std::string state = fmt::format("{:<{}}", r.state, ws);
        if (colour && !is_head && *state_colour(r.state) != '\0') {
            state = state_colour(r.state) + state + "\033[0m";
        }
        std::cout << fmt::format("{:<{}}  {}  {:<{}}  {:<{}}  {:<{}}  {:<{}}  {}\n", r.name, wn,
                                 state, r.reason, wr, r.data, wd, r.peer, wp, r.vm, wv, r.resync);
    };
    line(head, true);
    for (const auto& r : rows) line(r, false);
    if (rows.empty()) std::cout << "(no modules configured)\n";
}

int ask(const AdminOptions& o, nlohmann::json request, std::chrono::milliseconds default_timeout,
        nlohmann::json& result) {
    const auto timeout = o.timeout_seconds > 0 ? std::chrono::milliseconds(o.timeout_seconds * 1000)
                                               : default_timeout;
    const AdminReply r = ask_vmhad(o.socket, std::move(request), timeout);
    if (!r.reached) {
        std::cerr << fmt::format("vmha: cannot connect to vmhad at {}: {}\n", o.socket, r.problem);
        return exit_unreachable;
    }
    if (!r.body["ok"].get<bool>()) {
        std::cerr << fmt::format("vmha: {} ({})\n", str(r.body, "error", "vmhad refused"),
                                 str(r.body, "code", "unknown"));
        return exit_refused;
    }
    result = r.body.contains("result") ? r.body["result"] : nlohmann::json::object();
    return exit_ok;
}

}  // namespace

int admin_status(const AdminOptions& o, const std::string& module, bool json) {
    nlohmann::json request = {{"verb", "status"}};
    if (!module.empty()) request["module"] = module;
    nlohmann::json result;
    if (int rc = ask(o, std::move(request), std::chrono::seconds(10), result); rc != exit_ok) return rc;
    if (json) {
        std::cout << result.dump(2) << '\n';
    } else {
        print_status_table(result, ::isatty(STDOUT_FILENO) != 0);
    }
    return exit_ok;
}

int admin_command(const AdminOptions& o, const std::string& verb, const std::string& module) {
    nlohmann::json result;
    // start, stop and swap wait for the VM (ACPI shutdown, boot on the peer): minutes.
    if (int rc = ask(o, {{"verb", verb}, {"module", module}}, std::chrono::minutes(15), result);
        rc != exit_ok) {
        return rc;
    }
    if (result.is_object() && result.contains("message") && result["message"].is_string()) {
        std::cout << result["message"].get<std::string>() << '\n';
    } else {
        std::cout << fmt::format("{} {}: done\n", verb, module);
    }
    return exit_ok;
}

}  // namespace vmha::cli
