#include "meta/generations.h"

#include <algorithm>
#include <random>

#include <fmt/format.h>

#include <vmha/error.h>

namespace imagesync::meta {

std::string_view to_string(DataState state) {
    switch (state) {
        case DataState::Unknown: return "Unknown";
        case DataState::UpToDate: return "UpToDate";
        case DataState::Inconsistent: return "Inconsistent";
        case DataState::Outdated: return "Outdated";
    }
    return "invalid";
}

std::string_view to_string(ResyncKind kind) {
    switch (kind) {
        case ResyncKind::none: return "none";
        case ResyncKind::bitmap: return "bitmap";
        case ResyncKind::full: return "full";
    }
    return "invalid";
}

std::string_view to_string(SyncKind kind) {
    switch (kind) {
        case SyncKind::in_sync: return "in_sync";
        case SyncKind::self_is_source_bitmap: return "self_is_source_bitmap";
        case SyncKind::self_is_target_bitmap: return "self_is_target_bitmap";
        case SyncKind::self_is_source_full: return "self_is_source_full";
        case SyncKind::self_is_target_full: return "self_is_target_full";
        case SyncKind::split_brain: return "split_brain";
        case SyncKind::unrelated: return "unrelated";
        case SyncKind::no_usable_source: return "no_usable_source";
    }
    return "invalid";
}

SyncKind mirror(SyncKind kind) {
    switch (kind) {
        case SyncKind::self_is_source_bitmap: return SyncKind::self_is_target_bitmap;
        case SyncKind::self_is_target_bitmap: return SyncKind::self_is_source_bitmap;
        case SyncKind::self_is_source_full: return SyncKind::self_is_target_full;
        case SyncKind::self_is_target_full: return SyncKind::self_is_source_full;
        default: return kind;
    }
}

std::uint64_t fresh_generation_id() {
    static std::random_device device;
    for (;;) {
        std::uint64_t id = (static_cast<std::uint64_t>(device()) << 32) ^ device();
        if (!is_reserved_generation(id)) return id;
    }
}

std::string format_generation(std::uint64_t id) {
    if (id == kNoGeneration) return "none";
    if (id == kJustCreated) return "JustCreated";
    return fmt::format("{:016x}", id);
}

// ----- Generations -------------------------------------------------------------------------

void Generations::push_history(std::uint64_t id) {
    if (is_reserved_generation(id)) return;
    std::move_backward(history.begin(), history.end() - 1, history.end());
    history[0] = id;
}

bool Generations::in_history(std::uint64_t id) const {
    if (is_reserved_generation(id)) return false;
    return std::find(history.begin(), history.end(), id) != history.end();
}

void Generations::new_generation_when_alone(std::uint64_t fresh_id) {
    if (is_reserved_generation(fresh_id) || fresh_id == current || fresh_id == bitmap ||
        in_history(fresh_id)) {
        vmha::internal_error(fmt::format("new generation id {} is reserved or already in use",
                                         format_generation(fresh_id)));
    }
    if (bitmap != kNoGeneration) push_history(bitmap);
    // A copy that never held data has no generation worth tracking changes against.
    bitmap = is_reserved_generation(current) ? kNoGeneration : current;
    current = fresh_id;
}

void Generations::clear_bitmap_after_sync() {
    if (bitmap == kNoGeneration) return;
    push_history(bitmap);
    bitmap = kNoGeneration;
}

// ----- NodeMeta ------------------------------------------------------------------------------

NodeMeta NodeMeta::just_created() { return NodeMeta{}; }

NodeMeta NodeMeta::initial_source(std::uint64_t fresh_id) {
    if (is_reserved_generation(fresh_id)) {
        vmha::internal_error(fmt::format("initial generation id {} is reserved", fresh_id));
    }
    NodeMeta m;
    m.gen.current = fresh_id;
    m.data_state = DataState::UpToDate;
    return m;
}

void NodeMeta::note_start() {
    if (was_primary) crashed_primary = true;
    was_primary = false;
}

void NodeMeta::promote() {
    if (data_state != DataState::UpToDate) {
        vmha::internal_error(fmt::format("promoting a copy whose data state is {}",
                                         to_string(data_state)));
    }
    was_primary = true;
}

void NodeMeta::demote_cleanly() { was_primary = false; }

void NodeMeta::mark_outdated() {
    if (data_state == DataState::UpToDate) data_state = DataState::Outdated;
}

vmha::Status NodeMeta::force_up_to_date() {
    if (data_state == DataState::Inconsistent) {
        return vmha::Error(vmha::errc::not_up_to_date,
                           fmt::format("this copy is Inconsistent{} and cannot be forced UpToDate: "
                                       "it holds a half-finished resync",
                                       resync_in_progress()
                                           ? fmt::format(" ({} resync stopped at byte {})",
                                                         to_string(resync), resync_cursor)
                                           : std::string()));
    }
    data_state = DataState::UpToDate;
    return {};
}

void NodeMeta::start_full_sync_target() {
    if (was_primary) vmha::internal_error("a primary cannot become a full resync target");
    gen.current = kJustCreated;
    gen.bitmap = kNoGeneration;
    data_state = DataState::Inconsistent;
    resync = ResyncKind::full;
    resync_cursor = 0;
}

void NodeMeta::start_bitmap_sync_target() {
    if (was_primary) vmha::internal_error("a primary cannot become a bitmap resync target");
    data_state = DataState::Inconsistent;
    if (resync == ResyncKind::none) {
        resync = ResyncKind::bitmap;
        resync_cursor = 0;
    }
}

void NodeMeta::finish_sync_target(const Generations& source) {
    Generations adopted = source;
    adopted.clear_bitmap_after_sync();
    gen = adopted;
    data_state = DataState::UpToDate;
    crashed_primary = false;
    resync = ResyncKind::none;
    resync_cursor = 0;
}

void NodeMeta::finish_sync_source() {
    gen.clear_bitmap_after_sync();
    crashed_primary = false;
}

// ----- decide --------------------------------------------------------------------------------

namespace {

bool empty_current(std::uint64_t id) { return id == kNoGeneration || id == kJustCreated; }

std::string g(std::uint64_t id) { return format_generation(id); }

bool is_source(SyncKind k) {
    return k == SyncKind::self_is_source_bitmap || k == SyncKind::self_is_source_full;
}
bool is_target(SyncKind k) {
    return k == SyncKind::self_is_target_bitmap || k == SyncKind::self_is_target_full;
}

}  // namespace

std::uint64_t shared_ancestor(const Generations& a, const Generations& b) {
    auto ids = [](const Generations& x) {
        std::array<std::uint64_t, kHistorySize + 1> all{};
        all[0] = x.bitmap;
        std::copy(x.history.begin(), x.history.end(), all.begin() + 1);
        return all;
    };
    for (std::uint64_t id : ids(a)) {
        if (is_reserved_generation(id)) continue;
        for (std::uint64_t other : ids(b)) {
            if (id == other) return id;
        }
    }
    return 0;
}

namespace {

SyncDecision by_generations(const NodeMeta& self, const NodeMeta& peer, const Roles& roles) {
    const Generations& s = self.gen;
    const Generations& p = peer.gen;
    const bool s_incons = self.data_state == DataState::Inconsistent;
    const bool p_incons = peer.data_state == DataState::Inconsistent;

    if (s_incons && p_incons) {
        return {SyncKind::no_usable_source, 1,
                "both copies are Inconsistent (each is an unfinished resync target), so neither "
                "can be a resync source",
                false, false};
    }
    if (empty_current(s.current) && empty_current(p.current)) {
        return {SyncKind::no_usable_source, 10,
                "both copies are newly created and neither has been declared the initial data; "
                "the operator must choose the initial source",
                false, false};
    }
    if (empty_current(s.current)) {
        return {SyncKind::self_is_target_full, 20,
                fmt::format("this copy holds no generation ({}) and the peer's is {}: full resync "
                            "from the peer",
                            g(s.current), g(p.current)),
                false, false};
    }
    if (empty_current(p.current)) {
        return {SyncKind::self_is_source_full, 30,
                fmt::format("the peer's copy holds no generation ({}) and this one is {}: full "
                            "resync to the peer",
                            g(p.current), g(s.current)),
                false, false};
    }
    if (s.current == p.current) {
        if (s_incons != p_incons) {
            SyncKind k = s_incons ? SyncKind::self_is_target_bitmap : SyncKind::self_is_source_bitmap;
            return {k, 40,
                    fmt::format("both copies are on generation {} but the {} copy is Inconsistent: "
                                "its interrupted resync resumes",
                                g(s.current), s_incons ? "local" : "peer's"),
                    self.crashed_primary, peer.crashed_primary};
        }
        if (!self.crashed_primary && !peer.crashed_primary) {
            return {SyncKind::in_sync, 41,
                    fmt::format("both copies are on generation {} and neither crashed as primary",
                                g(s.current)),
                    false, false};
        }
        // Someone crashed while primary: its activity-log extents may differ. Pick a source.
        bool self_source;
        std::string why;
        if (roles.self_primary != roles.peer_primary) {
            self_source = roles.self_primary;
            why = fmt::format("the {} node is primary now", self_source ? "local" : "peer");
        } else if (self.crashed_primary != peer.crashed_primary) {
            self_source = self.crashed_primary;
            why = fmt::format("the {} node crashed while primary", self_source ? "local" : "peer");
        } else {
            self_source = roles.self_wins_ties;
            why = fmt::format("the tie-breaker chose the {} node", self_source ? "local" : "peer");
        }
        return {self_source ? SyncKind::self_is_source_bitmap : SyncKind::self_is_target_bitmap, 42,
                fmt::format("both copies are on generation {} but a node crashed while primary; "
                            "its activity-log extents are resynced and {}",
                            g(s.current), why),
                self.crashed_primary, peer.crashed_primary};
    }
    // Who is behind whom. Real histories never say both; if corrupt ones do, the rows below
    // (split brain or unrelated) decide, which keeps decide() symmetric.
    const bool t50 = s.current == p.bitmap;
    const bool t60 = p.in_history(s.current);
    const bool t70 = p.current == s.bitmap;
    const bool t80 = s.in_history(p.current);
    const bool self_behind = t50 || t60;
    const bool peer_behind = t70 || t80;
    if (self_behind && !peer_behind && t50) {
        return {SyncKind::self_is_target_bitmap, 50,
                fmt::format("the peer wrote alone since generation {} (its current is {}), which "
                            "is this copy's current: bitmap resync from the peer",
                            g(s.current), g(p.current)),
                self.crashed_primary, peer.crashed_primary};
    }
    if (self_behind && !peer_behind) {
        return {SyncKind::self_is_target_full, 60,
                fmt::format("this copy's generation {} is in the peer's history but not its "
                            "bitmap (the peer is on {}): full resync from the peer",
                            g(s.current), g(p.current)),
                false, false};
    }
    if (peer_behind && !self_behind && t70) {
        return {SyncKind::self_is_source_bitmap, 70,
                fmt::format("this node wrote alone since generation {} (its current is {}), "
                            "which is the peer's current: bitmap resync to the peer",
                            g(p.current), g(s.current)),
                self.crashed_primary, peer.crashed_primary};
    }
    if (peer_behind && !self_behind) {
        return {SyncKind::self_is_source_full, 80,
                fmt::format("the peer's generation {} is in this copy's history but not its "
                            "bitmap (this copy is on {}): full resync to the peer",
                            g(p.current), g(s.current)),
                false, false};
    }
    if (s.bitmap != kNoGeneration && s.bitmap == p.bitmap) {
        return {SyncKind::split_brain, 90,
                fmt::format("split brain: both nodes wrote alone since generation {} (local is "
                            "now {}, peer is now {})",
                            g(s.bitmap), g(s.current), g(p.current)),
                false, false};
    }
    if (std::uint64_t shared = shared_ancestor(s, p); shared != 0) {
        return {SyncKind::split_brain, 100,
                fmt::format("split brain: the copies diverged after the older shared generation "
                            "{} (local is now {}, peer is now {})",
                            g(shared), g(s.current), g(p.current)),
                false, false};
    }
    return {SyncKind::unrelated, 110,
            fmt::format("the copies share no generation (local is {}, peer is {}): they are "
                        "unrelated data and will not be connected",
                        g(s.current), g(p.current)),
            false, false};
}

bool unusable_source(const NodeMeta& source, const NodeMeta& target) {
    if (source.data_state == DataState::Inconsistent || source.data_state == DataState::Unknown) {
        return true;
    }
    return source.data_state == DataState::Outdated && target.data_state == DataState::UpToDate;
}

}  // namespace

SyncDecision decide(const NodeMeta& self, const NodeMeta& peer, const Roles& roles) {
    SyncDecision d = by_generations(self, peer, roles);
    const NodeMeta* source = is_source(d.kind) ? &self : is_target(d.kind) ? &peer : nullptr;
    const NodeMeta* target = source == &self ? &peer : &self;
    if (source != nullptr && unusable_source(*source, *target)) {
        return {SyncKind::no_usable_source, 2,
                fmt::format("rule {} makes the {} copy the resync source, but it is {} and the "
                            "other copy is {}; refusing ({})",
                            d.rule, source == &self ? "local" : "peer's",
                            to_string(source->data_state), to_string(target->data_state), d.reason),
                false, false};
    }
    return d;
}

}  // namespace imagesync::meta
