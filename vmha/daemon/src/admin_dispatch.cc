// vmhad's admin verbs (docs/admin-protocol.md): what each does with a module, where it acts, and
// the journal entry it leaves. A verb that acts where the VM runs (restart, swap, resync,
// verify, progress) asked on the node that does not run it goes to the peer over the control
// channel, and the peer's answer comes back as if given here.
#include <pwd.h>

#include <optional>
#include <set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "daemon.h"
#include "journal.h"

namespace vmha::daemon {
namespace {

constexpr const char* kVerbs =
    "status, start, stop, restart, swap, prim, second, failover, resync, verify, progress, log, schedule";

// Verbs that act where the VM runs, and how long the peer gets to answer them.
std::optional<std::chrono::milliseconds> forward_timeout(const std::string& verb) {
    using namespace std::chrono_literals;
    if (verb == "restart" || verb == "swap") return 15min;
    if (verb == "verify") return 6h;
    if (verb == "resync" || verb == "progress") return 30s;
    return std::nullopt;
}

// Who asks: the admin socket's SO_PEERCRED uid as a user name, or the user the peer named.
std::string who_asks(const nlohmann::json& request) {
    if (request.contains("forwarded_from")) {
        return fmt::format("{} on {}", request.value("user", std::string("?")),
                           request["forwarded_from"].get<std::string>());
    }
    const auto client = request.find("client");
    if (client == request.end() || !client->is_object()) return "?";
    const auto uid = client->value("uid", std::uint64_t{0});
    passwd pw{};
    passwd* found = nullptr;
    char buf[4096];
    if (::getpwuid_r(static_cast<uid_t>(uid), &pw, buf, sizeof buf, &found) == 0 && found) {
        return fmt::format("{} (uid {})", found->pw_name, uid);
    }
    return fmt::format("uid {}", uid);
}

bool flag(const nlohmann::json& request, const char* key) {
    auto it = request.find(key);
    return it != request.end() && it->is_boolean() && it->get<bool>();
}

std::string state_of(ModuleHost& m) { return std::string(module::to_string(m.runner().state())); }

}  // namespace

void Daemon::handle(const std::string& verb, const nlohmann::json& request, Reply done) {
    const std::string name = request.contains("module") ? request["module"].get<std::string>() : "";
    ModuleHost* m = name.empty() ? nullptr : find(name);
    if (!name.empty() && !m) {
        return done(Error(errc::not_found, fmt::format("module \"{}\" is not configured on {}", name, node_.name)));
    }
    if (verb == "status") {
        nlohmann::json modules = nlohmann::json::array();
        for (auto& h : modules_) {
            if (!m || h.get() == m) modules.push_back(h->status());
        }
        return done(nlohmann::json{{"node", node_.name}, {"modules", std::move(modules)}});
    }
    if (verb == "failover") return failover(m, request, std::move(done));
    if (verb == "schedule") return schedule(m, request, std::move(done));
    static const std::set<std::string> module_verbs = {"start", "stop", "restart", "swap", "prim", "second",
                                                       "resync", "verify", "progress", "log"};
    if (!module_verbs.count(verb)) {
        return done(Error(errc::invalid_argument, fmt::format("unknown verb \"{}\" ({})", verb, kVerbs)));
    }
    if (!m) return done(Error(errc::invalid_argument, fmt::format("\"{}\" needs a module", verb)));
    if (verb == "log") {
        const auto n = request.contains("n") && request["n"].is_number_unsigned() ? request["n"].get<std::size_t>() : 50;
        const auto after = request.contains("after") && request["after"].is_number_unsigned()
                               ? request["after"].get<std::uint64_t>()
                               : 0;
        return done(nlohmann::json{{"module", name},
                                   {"node", node_.name},
                                   {"entries", m->journal().read(after, n)},
                                   {"last_seq", m->journal().last_seq()}});
    }
    // Where the VM runs: the peer, when it runs there and not here. (A swap scheduled for later
    // is kept on both nodes: it is recorded here and sent to the peer.)
    const bool scheduled = verb == "swap" && request.contains("at");
    if (auto timeout = forward_timeout(verb); timeout && !scheduled && !request.contains("forwarded_from") &&
                                              !module::runs_vm(m->runner().state())) {
        if (m->peer_runs_vm()) {
            nlohmann::json f = request;
            f.erase("client");
            f["user"] = who_asks(request);
            if (verb != "progress") {
                spdlog::info("module \"{}\": operator {}: {} goes to {}, where the VM runs", name, f["user"].get<std::string>(),
                             verb, m->peer_name());
            }
            if (verb == "progress") return m->forward(std::move(f), *timeout, std::move(done));
            // Journaled here too, with where it went and how it ended.
            nlohmann::json entry = {{"kind", "command"}, {"verb", verb}, {"user", f["user"]},
                                    {"requested_at", utc_now()}, {"forwarded_to", m->peer_name()}};
            for (const char* key : {"force", "full", "mark"}) {
                if (flag(request, key)) entry["options"][key] = true;
            }
            return m->forward(std::move(f), *timeout,
                              [m, entry = std::move(entry), done = std::move(done)](Result<nlohmann::json> r) mutable {
                                  entry["ok"] = r.ok();
                                  if (!r) entry["error"] = r.error().message;
                                  m->journal().append(std::move(entry));
                                  done(std::move(r));
                              });
        }
        if (!m->channel_up() && verb != "progress") {
            return done(Error(errc::connection_lost,
                              fmt::format("module \"{}\" does not run the VM on {} ({}), and {} cannot be asked "
                                          "whether it runs it there: the control channel is down",
                                          name, node_.name, state_of(*m), m->peer_name())));
        }
    }
    if (verb == "progress") return done(m->progress());
    command(*m, verb, request, std::move(done));
}

void Daemon::command(ModuleHost& m, const std::string& verb, const nlohmann::json& request, Reply done) {
    const std::string name = m.name();
    const std::string who = who_asks(request);
    nlohmann::json options = nlohmann::json::object();
    for (const char* key : {"force", "full", "mark", "dry_run"}) {
        if (flag(request, key)) options[key] = true;
    }
    for (const char* key : {"at", "to"}) {
        if (request.contains(key) && request[key].is_string()) options[key] = request[key];
    }
    if (verb == "prim" && flag(request, "dry_run")) {
        // What `prim --force` would discard, asked before the CLI asks the operator to confirm;
        // refused as the command itself would be. Changes nothing, so not journaled.
        if (auto st = m.prim_refusal(flag(request, "force")); !st) return done(std::move(st).error());
        return done(nlohmann::json{{"module", name}, {"node", node_.name}, {"preview", m.prim_preview()}});
    }
    spdlog::info("module \"{}\": operator {}: {}{}", name, who, verb, options.empty() ? "" : " " + options.dump());
    const std::string requested_at = utc_now();
    // Every command leaves one journal entry with its outcome.
    auto finish = [&m, verb, who, options, requested_at, done = std::move(done)](Result<nlohmann::json> r) {
        nlohmann::json e = {{"kind", "command"}, {"verb", verb}, {"user", who}, {"requested_at", requested_at},
                            {"ok", r.ok()}};
        if (!options.empty()) e["options"] = options;
        if (!r) e["error"] = r.error().message;
        m.journal().append(std::move(e));
        if (!r) spdlog::warn("module \"{}\": {} refused: {}", m.name(), verb, r.error().message);
        done(std::move(r));
    };
    auto result = [this, &m](std::string message) {
        return nlohmann::json{{"module", m.name()}, {"node", node_.name}, {"state", state_of(m)},
                              {"message", std::move(message)}};
    };
    if (verb == "stop") {
        // Answered once the module is in STOP: the VM and imagesyncd are stopped here.
        return m.stop_module([this, name, result, finish](Status st) {
            if (!st) return finish(std::move(st).error());
            finish(result(fmt::format("module \"{}\" stopped on {}", name, node_.name)));
        });
    }
    if (verb == "start" || verb == "second") {
        auto st = verb == "start" ? m.start_module() : m.second();
        if (!st) return finish(std::move(st).error());
        return finish(result(verb == "start" ? fmt::format("module \"{}\" started on {}", name, node_.name)
                                             : fmt::format("module \"{}\" on {} waits for {} to run the VM",
                                                           name, node_.name, m.peer_name())));
    }
    if (verb == "swap" && request.contains("at")) {
        if (!request["at"].is_string() || (request.contains("to") && !request["to"].is_string())) {
            return finish(Error(errc::invalid_argument, "\"swap\" needs \"at\" (and \"to\", if given) as strings"));
        }
        return finish(m.schedule_swap(request["at"].get<std::string>(), request.value("to", std::string()), who));
    }
    if (verb == "swap") {
        return m.swap([this, &m, name, result, finish](Status st) {
            if (!st) return finish(std::move(st).error());
            auto r = result(fmt::format("module \"{}\": the VM moved from {} to {}", name, node_.name, m.peer_name()));
            r["swapped"] = true;
            finish(std::move(r));
        });
    }
    if (verb == "restart") {
        return m.restart([this, name, result, finish](Status st) {
            if (!st) return finish(std::move(st).error());
            finish(result(fmt::format("module \"{}\": the VM restarted on {}", name, node_.name)));
        });
    }
    if (verb == "prim") {
        const bool force = flag(request, "force");
        return m.prim(force, [this, name, force, result, finish](Status st) {
            if (!st) return finish(std::move(st).error());
            finish(result(fmt::format("module \"{}\": {} runs the VM now{}", name, node_.name,
                                      force ? " (forced: its data is the reference)" : "")));
        });
    }
    if (verb == "resync") return m.resync(flag(request, "full"), finish);
    m.verify(flag(request, "mark"), finish);
}

// `schedule [MODULE]`: the plan of every module (or one) on this node; `schedule cancel MODULE ID`
// cancels a pending one-off swap (here, and on the peer through the schedule it is sent).
void Daemon::schedule(ModuleHost* only, const nlohmann::json& request, Reply done) {
    if (request.contains("cancel")) {
        if (!only) return done(Error(errc::invalid_argument, "\"schedule\" with \"cancel\" needs a module"));
        if (!request["cancel"].is_string()) {
            return done(Error(errc::invalid_argument, "\"cancel\" must be the id of a scheduled swap"));
        }
        const std::string id = request["cancel"].get<std::string>();
        const std::string who = who_asks(request);
        auto r = only->cancel_scheduled(id, who);
        nlohmann::json e = {{"kind", "command"}, {"verb", "schedule cancel"}, {"user", who}, {"requested_at", utc_now()},
                            {"options", {{"id", id}}}, {"ok", r.ok()}};
        if (!r) e["error"] = r.error().message;
        only->journal().append(std::move(e));
        spdlog::info("module \"{}\": operator {}: schedule cancel {}: {}", only->name(), who, id,
                     r ? "done" : r.error().message);
        return done(std::move(r));
    }
    nlohmann::json modules = nlohmann::json::array();
    for (auto& h : modules_) {
        if (!only || h.get() == only) modules.push_back(h->schedule());
    }
    done(nlohmann::json{{"node", node_.name}, {"modules", std::move(modules)}});
}

// `failover on|off [MODULE]`: set here and on the peer (each node keeps it in its module state).
void Daemon::failover(ModuleHost* only, const nlohmann::json& request, Reply done) {
    if (!request.contains("on") || !request["on"].is_boolean()) {
        return done(Error(errc::invalid_argument, "\"failover\" needs \"on\": true or false"));
    }
    const bool on = request["on"].get<bool>();
    const bool forwarded = request.contains("forwarded_from");
    const std::string who = who_asks(request);
    std::vector<ModuleHost*> targets;
    for (auto& h : modules_) {
        if (!only || h.get() == only) targets.push_back(h.get());
    }
    struct Progress {
        nlohmann::json modules = nlohmann::json::array();
        std::size_t left = 0;
        Reply done;
        bool failed = false;
    };
    auto progress = std::make_shared<Progress>();
    progress->left = targets.size();
    progress->done = std::move(done);
    auto one_done = [progress, on]() {
        if (--progress->left != 0) return;
        progress->done(nlohmann::json{{"failover", on ? "on" : "off"}, {"modules", progress->modules}});
    };
    if (targets.empty()) {
        return progress->done(nlohmann::json{{"failover", on ? "on" : "off"}, {"modules", nlohmann::json::array()}});
    }
    for (ModuleHost* h : targets) {
        nlohmann::json entry = {{"module", h->name()}};
        const Status st = h->set_failover(on);
        h->journal().append({{"kind", "command"}, {"verb", "failover"}, {"user", who}, {"requested_at", utc_now()},
                             {"options", {{"on", on}}}, {"ok", st.ok()}});
        entry["nodes"][node_.name] = st ? "set" : st.error().message;
        spdlog::info("module \"{}\": operator {}: failover {}", h->name(), who, on ? "on" : "off");
        if (forwarded) {
            progress->modules.push_back(std::move(entry));
            one_done();
            continue;
        }
        const std::size_t index = progress->modules.size();
        progress->modules.push_back(std::move(entry));
        nlohmann::json f = {{"verb", "failover"}, {"module", h->name()}, {"on", on}, {"user", who}};
        h->forward(std::move(f), std::chrono::seconds(10),
                   [progress, index, peer = h->peer_name(), one_done](Result<nlohmann::json> r) {
                       progress->modules[index]["nodes"][peer] =
                           r ? std::string("set") : fmt::format("not set: {}", r.error().message);
                       one_done();
                   });
    }
}

}  // namespace vmha::daemon
