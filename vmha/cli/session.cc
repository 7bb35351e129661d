#include "session.h"

#include <iostream>

#include <fmt/format.h>

#include "admin_client.h"

namespace vmha::cli {

std::string str(const nlohmann::json& j, const char* key, const char* fallback) {
    if (j.is_object() && j.contains(key) && j[key].is_string()) return j[key].get<std::string>();
    return fallback;
}

std::uint64_t num(const nlohmann::json& j, const char* key) {
    if (j.is_object() && j.contains(key) && j[key].is_number_unsigned()) return j[key].get<std::uint64_t>();
    return 0;
}

Answer call(const AdminOptions& o, nlohmann::json request, std::chrono::milliseconds default_timeout) {
    const auto timeout = o.timeout_seconds > 0 ? std::chrono::milliseconds(o.timeout_seconds * 1000)
                                               : default_timeout;
    const AdminReply r = ask_vmhad(o.socket, std::move(request), timeout);
    Answer a;
    if (!r.reached) {
        a.exit = exit_unreachable;
        a.code = "unreachable";
        a.error = fmt::format("cannot connect to vmhad at {}: {}", o.socket, r.problem);
        return a;
    }
    if (!r.body["ok"].get<bool>()) {
        a.exit = exit_refused;
        a.code = str(r.body, "code", "unknown");
        a.error = str(r.body, "error", "vmhad refused");
        return a;
    }
    a.result = r.body.contains("result") ? r.body["result"] : nlohmann::json::object();
    return a;
}

int report(const AdminOptions& o, const Answer& a) {
    if (a.exit == exit_ok) return exit_ok;
    std::cerr << fmt::format("vmha: {} ({})\n", a.error, a.code);
    if (o.json) std::cout << nlohmann::json{{"ok", false}, {"code", a.code}, {"error", a.error}}.dump() << '\n';
    return a.exit;
}

void print_result(const AdminOptions& o, const nlohmann::json& result) {
    if (o.json) {
        std::cout << result.dump(2) << '\n';
    } else if (result.is_object() && result.contains("message") && result["message"].is_string()) {
        std::cout << result["message"].get<std::string>() << '\n';
    }
}

}  // namespace vmha::cli
