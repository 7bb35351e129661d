// `vmha resync` and `vmha verify`: imagesync's resync and online verify on the node that runs
// the VM (vmhad forwards them there), with --watch polling vmhad's `progress` until done.
#include <future>
#include <iostream>
#include <thread>

#include <fmt/format.h>

#include <vmha/human.h>

#include "progress.h"
#include "session.h"

namespace vmha::cli {
namespace {

constexpr auto poll_interval = std::chrono::milliseconds(500);  // progress poll interval

std::string eta_text(const nlohmann::json& r) {
    const auto eta = num(r, "eta_seconds");
    return fmt::format("ETA {}:{:02}", eta / 60, eta % 60);
}

std::chrono::steady_clock::time_point deadline_for(const AdminOptions& o, std::chrono::milliseconds fallback) {
    return std::chrono::steady_clock::now() +
           (o.timeout_seconds > 0 ? std::chrono::milliseconds(o.timeout_seconds * 1000) : fallback);
}

}  // namespace

int admin_resync(const AdminOptions& o, const std::string& module, bool full, bool watch) {
    nlohmann::json request = {{"verb", "resync"}, {"module", module}};
    if (full) request["full"] = true;
    const Answer a = call(o, std::move(request), command_timeout);
    if (a.exit != exit_ok) return report(o, a);
    const std::string node = str(a.result, "node");
    if (!watch) {
        if (o.json) {
            print_result(o, a.result);
        } else {
            std::cout << fmt::format("{}resync of module \"{}\" started on {}: {} recorded dirty\n", full ? "full " : "",
                                     module, node, human_bytes(num(a.result, "dirty_bytes")));
        }
        return exit_ok;
    }
    Progress bar(fmt::format("resync {}", module), o.json);
    const auto deadline = deadline_for(o, verify_timeout);
    int in_sync = 0;
    int link_down = 0;
    nlohmann::json last;
    while (std::chrono::steady_clock::now() < deadline) {
        const Answer p = call(o, {{"verb", "progress"}, {"module", module}}, status_timeout);
        if (p.exit != exit_ok) {
            bar.finish();
            return report(o, p);
        }
        last = p.result;
        const std::string connection = str(last, "connection", "down");
        if (last["resync"].is_object() && num(last["resync"], "total_bytes") > 0) {
            bar.show(num(last["resync"], "done_bytes"), num(last["resync"], "total_bytes"), eta_text(last["resync"]), last);
        } else if (last["verify"].is_object()) {
            bar.show(num(last["verify"], "compared_bytes"), num(last, "size_bytes"), "comparing", last);
        }
        const bool done = connection == "connected" && !last["resync"].is_object() && !last["verify"].is_object() &&
                          num(last, "dirty_bytes") == 0;
        in_sync = done ? in_sync + 1 : 0;
        link_down = connection == "connected" || connection == "sync_source" ? 0 : link_down + 1;
        if (in_sync >= 2) {
            bar.finish();
            if (o.json) {
                std::cout << nlohmann::json{{"event", "done"}, {"ok", true}, {"module", module}, {"node", str(last, "node")}}.dump()
                          << '\n';
            } else {
                std::cout << fmt::format("resync of module \"{}\" done: the peer of {} is in sync\n", module, str(last, "node"));
            }
            return exit_ok;
        }
        if (link_down >= 10) {
            bar.finish();
            const Answer failed{exit_refused, {}, "connection_lost",
                                fmt::format("module \"{}\": the replication link on {} is {}; the resync stopped "
                                            "with {} left", module, str(last, "node"), connection,
                                            human_bytes(num(last, "dirty_bytes")))};
            return report(o, failed);
        }
        std::this_thread::sleep_for(poll_interval);
    }
    bar.finish();
    const Answer late{exit_unreachable, {}, "timeout",
                      fmt::format("module \"{}\": the resync did not finish in time ({} left)", module,
                                  human_bytes(num(last, "dirty_bytes")))};
    return report(o, late);
}

int admin_verify(const AdminOptions& o, const std::string& module, bool mark, bool watch) {
    nlohmann::json request = {{"verb", "verify"}, {"module", module}};
    if (mark) request["mark"] = true;
    // The verify request answers once both copies are compared; --watch asks for progress
    // meanwhile on another connection.
    auto verify = std::async(std::launch::async, [&o, request] { return call(o, request, verify_timeout); });
    if (watch) {
        Progress bar(fmt::format("verify {}", module), o.json);
        while (verify.wait_for(poll_interval) != std::future_status::ready) {
            const Answer p = call(o, {{"verb", "progress"}, {"module", module}}, status_timeout);
            if (p.exit != exit_ok || !p.result.contains("verify") || !p.result["verify"].is_object()) continue;
            bar.show(num(p.result["verify"], "compared_bytes"), num(p.result, "size_bytes"), "", p.result);
        }
        bar.finish();
    }
    const Answer a = verify.get();
    if (a.exit != exit_ok) return report(o, a);
    const auto differing = num(a.result, "differing_bytes");
    if (o.json) {
        nlohmann::json r = a.result;
        if (watch) r["event"] = "done";
        std::cout << (watch ? r.dump() : r.dump(2)) << '\n';
    } else {
        std::cout << fmt::format("verify of module \"{}\" on {}: {} compared, {} differ{}\n", module,
                                 str(a.result, "node"), human_bytes(num(a.result, "compared_bytes")),
                                 human_bytes(differing), differing && mark ? " (marked for resync)" : "");
        for (const auto& r : a.result.value("ranges", nlohmann::json::array())) {
            std::cout << fmt::format("  {} offset {} length {}\n", str(r, "export"), num(r, "offset"), num(r, "length"));
        }
    }
    return differing > 0 ? exit_differences : exit_ok;
}

}  // namespace vmha::cli
