#include <algorithm>
#include <array>
#include <charconv>
#include <tuple>

#include <fmt/format.h>

#include <vmha/config/units.h>
#include <vmha/module/scheduler.h>

namespace vmha::module {
namespace {

using std::chrono::seconds;

constexpr std::array<std::string_view, 6> outcome_names = {"pending", "cancelled", "not_needed",
                                                           "skipped", "failed",    "done"};

std::optional<JobOutcome> outcome_from(std::string_view s) {
    for (std::size_t i = 0; i < outcome_names.size(); ++i) {
        if (outcome_names[i] == s) return static_cast<JobOutcome>(i);
    }
    return std::nullopt;
}

std::int64_t unix(SysSeconds t) { return t.time_since_epoch().count(); }
SysSeconds from_unix(std::int64_t s) { return SysSeconds{seconds{s}}; }

// An id the operator can type: 1 to 32 of [a-z0-9-].
bool valid_id(const std::string& id) {
    return !id.empty() && id.size() <= 32 &&
           std::all_of(id.begin(), id.end(), [](char c) {
               return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
           });
}

std::string human(std::chrono::seconds d) {
    return config::format_duration(std::chrono::duration_cast<config::Duration>(d));
}

}  // namespace

std::string_view to_string(JobOutcome o) { return outcome_names[static_cast<std::size_t>(o)]; }

Scheduler::Scheduler(SchedulerConfig config, SchedulePort& port, ScheduleStore& store)
    : config_(std::move(config)), port_(port), store_(store) {}

// ---- persistence -----------------------------------------------------------------------

nlohmann::json Scheduler::swaps_json() const {
    nlohmann::json swaps = nlohmann::json::array();
    for (const auto& s : swaps_) {
        swaps.push_back({{"id", s.id},
                         {"at", unix(s.at)},
                         {"to", s.to},
                         {"by", s.by},
                         {"created", unix(s.created)},
                         {"outcome", to_string(s.outcome)},
                         {"reason", s.reason},
                         {"settled_by", s.settled_by},
                         {"settled", unix(s.settled)}});
    }
    return swaps;
}

nlohmann::json Scheduler::to_json() const {
    nlohmann::json history = nlohmann::json::array();
    for (const auto& e : history_) {
        history.push_back({{"due", unix(e.due)},
                           {"job", e.job},
                           {"outcome", to_string(e.outcome)},
                           {"reason", e.reason},
                           {"at", unix(e.at)}});
    }
    nlohmann::json j = {{"version", 1}, {"swaps", swaps_json()}, {"history", std::move(history)}};
    if (checked_until_) j["checked_until"] = unix(*checked_until_);
    return j;
}

namespace {

// One swap entry from a file or the peer; nullopt if anything in it is off.
std::optional<ScheduledSwap> read_swap(const nlohmann::json& j) {
    if (!j.is_object()) return std::nullopt;
    auto str = [&](const char* k) -> std::optional<std::string> {
        auto it = j.find(k);
        if (it == j.end() || !it->is_string() || it->get_ref<const std::string&>().size() > 512) return std::nullopt;
        return it->get<std::string>();
    };
    auto num = [&](const char* k) -> std::optional<std::int64_t> {
        auto it = j.find(k);
        if (it == j.end() || !it->is_number_integer()) return std::nullopt;
        return it->get<std::int64_t>();
    };
    auto id = str("id");
    auto to = str("to");
    auto by = str("by");
    auto outcome = str("outcome");
    auto reason = str("reason");
    auto settled_by = str("settled_by");
    auto at = num("at");
    auto created = num("created");
    auto settled = num("settled");
    if (!id || !valid_id(*id) || !to || !by || !outcome || !reason || !settled_by || !at || !created ||
        !settled) {
        return std::nullopt;
    }
    auto o = outcome_from(*outcome);
    if (!o) return std::nullopt;
    return ScheduledSwap{*id,        from_unix(*at), *to,     *by, from_unix(*created), *o, *reason,
                         *settled_by, from_unix(*settled)};
}

}  // namespace

Status Scheduler::load(SysSeconds now) {
    now_ = now;
    auto loaded = store_.load();
    if (!loaded) return loaded.error();
    if (!*loaded) {
        checked_until_ = now;  // never scheduled anything: nothing was missed
        save();                // from now on, a time that falls due while vmhad is down is seen
        return {};
    }
    const nlohmann::json& j = **loaded;
    auto bad = [&](std::string_view why) {
        return Error(errc::invalid_config, fmt::format("module \"{}\": the saved schedule is unusable: {}",
                                                       config_.module, why));
    };
    if (!j.is_object() || j.value("version", 0) != 1) return bad("not a version 1 schedule");
    if (auto it = j.find("checked_until"); it != j.end()) {
        if (!it->is_number_integer()) return bad("checked_until is not a time");
        checked_until_ = from_unix(it->get<std::int64_t>());
    } else {
        checked_until_ = now;
    }
    if (!j.contains("swaps") || !j["swaps"].is_array()) return bad("no swaps list");
    for (const auto& e : j["swaps"]) {
        auto s = read_swap(e);
        if (!s) return bad(fmt::format("swap entry {} is malformed", e.dump()));
        swaps_.push_back(std::move(*s));
    }
    if (j.contains("history") && j["history"].is_array()) {
        for (const auto& e : j["history"]) {
            if (!e.is_object()) continue;
            auto o = outcome_from(e.value("outcome", ""));
            if (!o) continue;
            history_.push_back({from_unix(e.value("due", std::int64_t{0})), e.value("job", ""), *o,
                                e.value("reason", ""), from_unix(e.value("at", std::int64_t{0}))});
        }
    }
    return {};
}

void Scheduler::save() {
    saved_mark_ = checked_until_;
    if (auto st = store_.save(to_json()); !st) {
        port_.record({now_, "saving the schedule", JobOutcome::failed, st.error().message, now_});
    }
}

// ---- time ------------------------------------------------------------------------------

std::optional<SysSeconds> Scheduler::next_fire_after(SysSeconds t) const {
    if (!config_.failback) return std::nullopt;
    const auto local = config::CivilTime::from(config_.zone.to_local(t));
    config::CivilMinute m = local.minute_of();
    // Bounded: a gap or an overlap skips at most a few hours of minutes.
    for (int i = 0; i < 100000; ++i) {
        auto next = config_.failback->next_after(m);
        if (!next) return std::nullopt;
        const auto r = config_.zone.resolve(config::CivilTime::from(*next).local());
        if (r.first > t) return r.first;  // gap: the jump; overlap: the first occurrence
        m = *next;
    }
    return std::nullopt;
}

std::vector<SysSeconds> Scheduler::next_failbacks(SysSeconds after, int count) const {
    std::vector<SysSeconds> out;
    for (auto t = next_fire_after(after); t && static_cast<int>(out.size()) < count; t = next_fire_after(*t)) {
        out.push_back(*t);
    }
    return out;
}

Result<SysSeconds> Scheduler::parse_when(std::string_view text, SysSeconds now) const {
    const auto& zone = config_.zone;
    auto in_future = [&](SysSeconds t) -> Result<SysSeconds> {
        if (t <= now) {
            return Error(errc::invalid_argument, fmt::format("{} is not in the future (it is now {})",
                                                             zone.format(t), zone.format(now)));
        }
        if (t > now + std::chrono::days(3660)) {
            return Error(errc::invalid_argument, fmt::format("{} is more than ten years away", zone.format(t)));
        }
        return t;
    };
    if (!text.empty() && text.front() == '+') {
        auto d = config::parse_duration(text.substr(1));
        if (!d) {
            return Error(errc::invalid_argument,
                         fmt::format("\"{}\": {} (e.g. \"+90s\", \"+2h\")", text, d.error().message));
        }
        return in_future(now + std::chrono::ceil<seconds>(*d));
    }
    // An explicit offset after the time: "Z", "+HH:MM" or "-HH:MM".
    std::optional<int> offset;
    std::string_view civil = text;
    if (!text.empty() && (text.back() == 'Z' || text.back() == 'z')) {
        offset = 0;
        civil = text.substr(0, text.size() - 1);
    } else if (text.size() > 6 && (text[text.size() - 6] == '+' || text[text.size() - 6] == '-') &&
               text[text.size() - 3] == ':') {
        int h = 0;
        int m = 0;
        const char* p = text.data() + text.size() - 5;
        const auto r1 = std::from_chars(p, p + 2, h);
        const auto r2 = std::from_chars(p + 3, p + 5, m);
        if (r1.ec != std::errc() || r1.ptr != p + 2 || r2.ec != std::errc() || r2.ptr != p + 5 || h > 14 || m > 59) {
            return Error(errc::invalid_argument, fmt::format("\"{}\": the UTC offset is not +HH:MM", text));
        }
        offset = (h * 3600 + m * 60) * (text[text.size() - 6] == '-' ? -1 : 1);
        civil = text.substr(0, text.size() - 6);
    }
    auto c = config::parse_civil_time(civil);
    if (!c) {
        return Error(errc::invalid_argument,
                     fmt::format("{} (or \"+DURATION\", e.g. \"+2h\"; a time may end in \"Z\" or "
                                 "\"+01:00\")", c.error().message));
    }
    if (offset) return in_future(SysSeconds{c->local().time_since_epoch()} - seconds(*offset));
    const auto r = zone.resolve(c->local());
    using Kind = config::TimeZone::Resolved::Kind;
    if (r.kind == Kind::gap) {
        return Error(errc::invalid_argument,
                     fmt::format("{} does not exist in {}: the clocks jump over it (to {}); give a "
                                 "time outside the jump",
                                 c->to_string(), zone.name(), zone.format(r.first)));
    }
    if (r.kind == Kind::overlap) {
        auto off = [&](SysSeconds t) {
            const int o = zone.offset_at(t).utc_offset;
            return fmt::format("{}{:02}:{:02}", o < 0 ? '-' : '+', std::abs(o) / 3600, std::abs(o) / 60 % 60);
        };
        return Error(errc::invalid_argument,
                     fmt::format("{} happens twice in {} (the clocks go back); say which: \"{}{}\" "
                                 "or \"{}{}\"",
                                 c->to_string(), zone.name(), c->to_string(), off(r.first), c->to_string(),
                                 off(r.second)));
    }
    return in_future(r.first);
}

// ---- the jobs --------------------------------------------------------------------------

void Scheduler::event(SysSeconds due, std::string job, JobOutcome o, std::string reason, SysSeconds now) {
    ScheduleEvent e{due, std::move(job), o, std::move(reason), now};
    port_.record(e);
    history_.push_back(std::move(e));
    while (history_.size() > config_.history) history_.pop_front();
}

void Scheduler::tick(SysSeconds now) {
    now_ = now;
    if (!checked_until_) checked_until_ = now;
    if (in_flight_) return;  // one swap at a time; what falls due meanwhile waits its turn
    if (now < *checked_until_) {
        // The wall clock went back: nothing is fired twice; wait until it passes the mark again.
        return;
    }
    bool changed = false;
    // Settled swaps are forgotten after a while.
    const auto before = swaps_.size();
    std::erase_if(swaps_, [&](const ScheduledSwap& s) {
        return s.outcome != JobOutcome::pending && s.settled + config_.keep_settled < now;
    });
    changed = swaps_.size() != before;

    if (config_.failback && config_.preferred != config_.self) {
        // Every firing time in (checked_until, now]: the last one is the one to act on, if it is
        // not too late; those before it are missed.
        std::optional<SysSeconds> last;
        std::size_t count = 0;
        for (auto t = next_fire_after(*checked_until_); t && *t <= now && count < 1000000;
             t = next_fire_after(*t)) {
            last = t;
            ++count;
        }
        if (last) {
            checked_until_ = now;
            handle_failback(*last, now, count - 1);
            save();
            if (in_flight_) return;
        }
    }
    checked_until_ = now;
    // The mark is saved now and then, so that a time falling due while vmhad is down is noticed
    // (and run late, or recorded as missed) when it starts again.
    const bool mark_old = !saved_mark_ || now - *saved_mark_ >= config_.save_mark_every;
    for (auto& s : swaps_) {
        if (s.outcome != JobOutcome::pending || s.at > now) continue;
        handle_swap(s, now);
        // Still pending (the peer runs the VM and acts), nothing to save or tell.
        if (s.outcome != JobOutcome::pending) changed = true;
        if (in_flight_) break;
    }
    if (changed || mark_old) save();
    if (changed) port_.changed();
}

void Scheduler::handle_failback(SysSeconds due, SysSeconds now, std::size_t missed) {
    const std::string job = fmt::format("failback to {}", config_.preferred);
    if (missed > 0) {
        event(due, job, JobOutcome::skipped,
              fmt::format("{} earlier time(s) missed while vmhad was not running", missed), now);
    }
    if (now - due > config_.late_limit) {
        event(due, job, JobOutcome::skipped,
              fmt::format("missed: due at {}, {} ago (vmhad was not running); the next is at {}",
                          config_.zone.format(due), human(now - due),
                          next_fire_after(now) ? config_.zone.format(*next_fire_after(now)) : "never"),
              now);
        return;
    }
    if (!port_.runs_vm()) {
        if (port_.peer_runs_vm()) {
            event(due, job, JobOutcome::not_needed,
                  fmt::format("the VM already runs on the preferred node {}", config_.preferred), now);
        } else {
            event(due, job, JobOutcome::skipped,
                  fmt::format("the VM runs on neither node (the module is stopped or waiting)"), now);
        }
        return;
    }
    if (auto st = port_.swap_refusal(); !st) {
        event(due, job, JobOutcome::skipped, st.error().message, now);
        return;
    }
    run_swap(job, due, "");
}

void Scheduler::handle_swap(ScheduledSwap& s, SysSeconds now) {
    const std::string job = fmt::format("swap {} to {}", s.id, s.to);
    auto skip = [&](std::string reason) {
        settle(s, JobOutcome::skipped, reason, now);
        event(s.at, job, JobOutcome::skipped, std::move(reason), now);
    };
    if (now - s.at > config_.late_limit) {
        return skip(fmt::format("missed: due at {}, {} ago; vmhad was not running, or {} ran the VM "
                                "and did not report it",
                                config_.zone.format(s.at), human(now - s.at), config_.peer));
    }
    if (port_.runs_vm()) {
        if (s.to == config_.self) return skip(fmt::format("the VM already runs on {}", s.to));
        if (auto st = port_.swap_refusal(); !st) return skip(st.error().message);
        return run_swap(job, s.at, s.id);
    }
    if (port_.peer_runs_vm()) {
        if (s.to == config_.peer) return skip(fmt::format("the VM already runs on {}", s.to));
        return;  // the peer runs the VM: it carries the swap out and reports
    }
    skip("the VM runs on neither node (the module is stopped or waiting)");
}

void Scheduler::settle(ScheduledSwap& s, JobOutcome o, std::string reason, SysSeconds now) {
    s.outcome = o;
    s.reason = std::move(reason);
    s.settled_by = config_.self;
    s.settled = now;
}

void Scheduler::run_swap(std::string job, SysSeconds due, std::string swap_id) {
    in_flight_ = true;
    port_.record({due, job, JobOutcome::pending, "starting: stopping the VM here for " + config_.peer, now_});
    port_.swap([this, alive = alive_, job = std::move(job), due, swap_id = std::move(swap_id)](Status st) {
        if (!*alive) return;
        in_flight_ = false;
        const JobOutcome o = st ? JobOutcome::done : JobOutcome::failed;
        const std::string reason = st ? fmt::format("the VM runs on {}", config_.peer) : st.error().message;
        event(due, job, o, reason, now_);
        for (auto& s : swaps_) {
            if (s.id == swap_id && s.outcome == JobOutcome::pending) settle(s, o, reason, now_);
        }
        save();
        if (!swap_id.empty()) port_.changed();
    });
}

void Scheduler::sort_swaps() {
    std::sort(swaps_.begin(), swaps_.end(),
              [](const auto& a, const auto& b) { return std::tie(a.at, a.id) < std::tie(b.at, b.id); });
}

// ---- operator commands -----------------------------------------------------------------

Result<ScheduledSwap> Scheduler::add_swap(std::string id, SysSeconds at, std::string to, std::string by,
                                          SysSeconds now) {
    if (!valid_id(id)) return Error(errc::internal, fmt::format("bad swap id \"{}\"", id));
    if (to != config_.self && to != config_.peer) {
        return Error(errc::invalid_argument, fmt::format("\"{}\" is not a node of module \"{}\"", to, config_.module));
    }
    if (at <= now) return Error(errc::invalid_argument, "the time is not in the future");
    for (const auto& s : swaps_) {
        if (s.id == id) return Error(errc::already_exists, fmt::format("swap {} exists already", id));
        if (s.outcome == JobOutcome::pending && s.at == at) {
            return Error(errc::already_exists,
                         fmt::format("swap {} is already scheduled at {} (to {}); cancel it first with "
                                     "`vmha schedule cancel {} {}`",
                                     s.id, config_.zone.format(at), s.to, config_.module, s.id));
        }
    }
    const std::size_t pending = static_cast<std::size_t>(
        std::count_if(swaps_.begin(), swaps_.end(), [](const auto& s) { return s.outcome == JobOutcome::pending; }));
    if (pending >= 100) {
        return Error(errc::busy, fmt::format("module \"{}\" has 100 pending swaps already", config_.module));
    }
    ScheduledSwap s{std::move(id), at, std::move(to), std::move(by), now, JobOutcome::pending, "", "", {}};
    swaps_.push_back(s);
    sort_swaps();
    now_ = now;
    save();
    port_.changed();
    return s;
}

Result<ScheduledSwap> Scheduler::cancel(const std::string& id, const std::string& by, SysSeconds now) {
    for (auto& s : swaps_) {
        if (s.id != id) continue;
        if (s.outcome != JobOutcome::pending) {
            return Error(errc::invalid_argument,
                         fmt::format("swap {} is {} already ({}{})", id, to_string(s.outcome),
                                     s.reason.empty() ? "" : s.reason + ", ",
                                     "settled by " + s.settled_by));
        }
        if (in_flight_ && s.at <= now) {
            return Error(errc::busy, fmt::format("swap {} is running now", id));
        }
        settle(s, JobOutcome::cancelled, "cancelled by " + by, now);
        now_ = now;
        event(s.at, fmt::format("swap {} to {}", s.id, s.to), JobOutcome::cancelled, s.reason, now);
        save();
        port_.changed();
        return s;
    }
    return Error(errc::not_found, fmt::format("module \"{}\" has no scheduled swap \"{}\" (`vmha schedule {}` "
                                              "lists them)", config_.module, id, config_.module));
}

// ---- the peer --------------------------------------------------------------------------

nlohmann::json Scheduler::sync_message() const { return {{"swaps", swaps_json()}}; }

Result<int> Scheduler::merge(const nlohmann::json& message, SysSeconds now) {
    if (!message.is_object() || !message.contains("swaps") || !message["swaps"].is_array() ||
        message["swaps"].size() > 1000) {
        return Error(errc::protocol_error, "a schedule message needs a \"swaps\" list (at most 1000)");
    }
    int taken = 0;
    int bad = 0;
    for (const auto& e : message["swaps"]) {
        auto theirs = read_swap(e);
        if (!theirs || (theirs->to != config_.self && theirs->to != config_.peer)) {
            ++bad;
            continue;
        }
        auto mine = std::find_if(swaps_.begin(), swaps_.end(), [&](const auto& s) { return s.id == theirs->id; });
        if (mine == swaps_.end()) {
            if (theirs->outcome != JobOutcome::pending && theirs->settled + config_.keep_settled < now) continue;
            swaps_.push_back(std::move(*theirs));
            ++taken;
        } else if (theirs->outcome > mine->outcome) {
            *mine = std::move(*theirs);
            ++taken;
        }
    }
    if (taken > 0) {
        sort_swaps();
        now_ = now;
        save();
    }
    if (bad > 0) {
        return Error(errc::protocol_error,
                     fmt::format("{} malformed swap entr{} from {} ignored ({} taken)", bad, bad == 1 ? "y" : "ies",
                                 config_.peer, taken));
    }
    return taken;
}

nlohmann::json Scheduler::plan_json(SysSeconds now) const {
    auto when = [&](SysSeconds t) { return nlohmann::json{{"unix", unix(t)}, {"local", config_.zone.format(t)}}; };
    nlohmann::json j = {{"module", config_.module}, {"node", config_.self}, {"timezone", config_.zone.name()},
                        {"now", when(now)}};
    if (config_.failback) {
        nlohmann::json next = nlohmann::json::array();
        for (auto t : next_failbacks(now, 3)) next.push_back(when(t));
        j["failback"] = {{"schedule", config_.failback->text()}, {"to", config_.preferred}, {"next", std::move(next)}};
    } else {
        j["failback"] = nullptr;
    }
    nlohmann::json swaps = nlohmann::json::array();
    for (const auto& s : swaps_) {
        nlohmann::json e = {{"id", s.id}, {"at", when(s.at)}, {"to", s.to}, {"by", s.by},
                            {"created", when(s.created)}, {"outcome", to_string(s.outcome)}};
        if (s.outcome != JobOutcome::pending) {
            e["reason"] = s.reason;
            e["settled_by"] = s.settled_by;
            e["settled"] = when(s.settled);
        }
        swaps.push_back(std::move(e));
    }
    j["swaps"] = std::move(swaps);
    nlohmann::json history = nlohmann::json::array();
    for (const auto& e : history_) {
        history.push_back({{"due", when(e.due)}, {"job", e.job}, {"outcome", to_string(e.outcome)},
                           {"reason", e.reason}, {"at", when(e.at)}});
    }
    j["history"] = std::move(history);
    return j;
}

}  // namespace vmha::module
