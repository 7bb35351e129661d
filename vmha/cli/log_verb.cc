// `vmha log MODULE [-n N] [--follow]`: the module's journal on this node — transitions with
// their rule and reason, checker results, vmhad's notes, and operator commands with who ran
// them. --json prints each entry as one JSON object per line.
#include <algorithm>
#include <iostream>
#include <thread>

#include <fmt/format.h>

#include "session.h"

namespace vmha::cli {
namespace {

std::string line_for(const nlohmann::json& e) {
    const std::string kind = str(e, "kind", "?");
    std::string text;
    if (kind == "transition") {
        text = fmt::format("{} -> {} (rule {}): {}", str(e, "from"), str(e, "to"),
                           e.contains("rule") && e["rule"].is_number() ? e["rule"].dump() : "?", str(e, "reason"));
    } else if (kind == "checker") {
        text = fmt::format("checker {} {}: {}", str(e, "checker"), str(e, "verdict"), str(e, "reason"));
    } else if (kind == "command") {
        std::string options;
        if (e.contains("options") && e["options"].is_object()) {
            for (const auto& [k, v] : e["options"].items()) {
                if (k == "on" && v.is_boolean()) {
                    options += v.get<bool>() ? " on" : " off";
                } else if (v.is_boolean()) {
                    options += " --" + k;
                } else if (v.is_string()) {
                    options += fmt::format(" --{} \"{}\"", k, v.get<std::string>());
                }
            }
        }
        const bool ok = e.value("ok", false);
        text = fmt::format("{} ran `{}{}`{}: {}", str(e, "user"), str(e, "verb"), options,
                           e.contains("forwarded_to") ? " (on " + str(e, "forwarded_to") + ")" : "",
                           ok ? "done" : "refused: " + str(e, "error"));
    } else {
        text = str(e, "message");
    }
    return fmt::format("{}  {:<10}  {}", str(e, "time"), kind, text);
}

}  // namespace

int admin_log(const AdminOptions& o, const std::string& module, std::size_t lines, bool follow) {
    std::uint64_t after = 0;
    std::size_t n = lines;
    for (;;) {
        const Answer a = call(o, {{"verb", "log"}, {"module", module}, {"n", n}, {"after", after}}, status_timeout);
        if (a.exit != exit_ok) return report(o, a);
        for (const auto& e : a.result.value("entries", nlohmann::json::array())) {
            std::cout << (o.json ? e.dump() : line_for(e)) << '\n';
            after = std::max(after, num(e, "seq"));
        }
        after = std::max(after, num(a.result, "last_seq"));
        std::cout << std::flush;
        if (!follow) return exit_ok;
        n = 10000;  // following: everything new
        std::this_thread::sleep_for(std::chrono::seconds(1));  // poll interval
    }
}

}  // namespace vmha::cli
