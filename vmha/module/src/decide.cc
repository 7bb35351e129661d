#include <vmha/module/decide.h>

#include <fmt/format.h>

namespace vmha::module {
namespace {

Decision make(State next, int rule, std::string reason) {
    Decision d;
    d.next = next;
    d.rule = rule;
    d.reason = std::move(reason);
    return d;
}

bool peer_reports_running(const Snapshot& s) {
    return s.channel_up && s.report && s.report->runs();
}

// The state of a node that runs the VM: PRIM while the peer receives every write.
State running_state(const Snapshot& s) {
    return peer_receives_writes(s.link) ? State::prim : State::alone;
}

// Why this node, idle, should run the VM rather than the peer (rule 60); empty = it should not.
std::string reason_to_run(const Snapshot& s) {
    const PeerReport& p = *s.report;
    if (p.handing_over) return fmt::format("{} handed the VM over", s.peer);
    if (p.data != DataState::up_to_date) {
        return fmt::format("the data on {} is {}; the UpToDate copy is here", s.peer,
                           to_string(p.data));
    }
    if (!p.fit) return fmt::format("{} is unfit to run the VM", s.peer);
    if (p.state == State::stop) return fmt::format("the module is stopped on {}", s.peer);
    if (s.standing == Standing::ahead) return fmt::format("the data here is newer than on {}", s.peer);
    if (s.preferred) return fmt::format("this node is preferred over {}", s.peer);
    return {};
}

// The grant this node gives the peer's claim now (0 = none): only while this node does not
// run the VM and does not compete for it with the preference on its side.
std::uint64_t compute_grant(const Snapshot& s) {
    if (!s.channel_up || !s.report || s.report->claim == 0) return 0;
    if (runs_vm(s.current) || s.operator_prim) return 0;
    // Never to a copy older than this one: it would start the VM on stale data.
    if (s.standing != Standing::same && s.standing != Standing::behind) return 0;
    const bool competing = s.own_claim != 0 && s.preferred && s.started;
    return competing ? 0 : s.report->claim;
}

Decision decide_running(const Snapshot& s) {
    const State cur = s.current;
    if (s.unfit) return make(State::wait, 40, fmt::format("{}; this node is unfit to run the VM", *s.unfit));
    if (peer_reports_running(s)) {
        if (s.vm_disks_lost) {
            return make(State::wait, 41, fmt::format("{} took the VM over while its disks here were "
                                                     "away; stopped here", s.peer));
        }
        if (s.preferred) {
            return make(cur, 41, fmt::format("split brain: {} runs the VM too; it stays here, on "
                                             "the preferred node", s.peer));
        }
        return make(State::wait, 41, fmt::format("split brain: {} runs the VM too; stopped here, "
                                                 "where it is not preferred", s.peer));
    }
    if (s.link == Link::split_brain && !s.preferred) {
        return make(State::wait, 41, fmt::format("split brain: the copy on {} also went on alone; "
                                                 "stopped here, where it is not preferred", s.peer));
    }
    const bool eligible = peer_eligible(s);
    const bool vm_out_of_restarts = s.vm_failed && !s.restart_left;
    if ((s.failover || vm_out_of_restarts) && eligible && !s.failover_off) {
        Decision d = make(State::second, 42,
                          fmt::format("failing over to {}: {}", s.peer,
                                      s.failover ? *s.failover
                                                 : *s.vm_failed + ", and no restart is left"));
        d.hand_over = true;
        return d;
    }
    if (s.vm_failed && s.restart_left && !s.imagesync_primary) {
        return make(cur, 43, fmt::format("{}; restarting the VM once imagesync serves its disks "
                                         "writable again", *s.vm_failed));
    }
    if (s.vm_failed && s.restart_left) {
        Decision d = make(cur, 43, fmt::format("restarting the VM here: {}", *s.vm_failed));
        d.restart_vm = true;
        return d;
    }
    if (s.vm_failed) {
        return make(State::wait, 44,
                    s.failover_off ? fmt::format("{}; no restart is left, and failover is off",
                                                 *s.vm_failed)
                                   : fmt::format("{}; no restart is left and {} cannot take the VM over",
                                                 *s.vm_failed, s.peer));
    }
    if (s.failover) {
        return make(cur, 45, s.failover_off
                                 ? fmt::format("{}; it would fail over, but failover is off", *s.failover)
                                 : fmt::format("{}; it would fail over, but {} cannot take the VM over",
                                               *s.failover, s.peer));
    }
    if (s.swap_requested && eligible) {
        Decision d = make(State::second, 46, fmt::format("swapping to {} (operator)", s.peer));
        d.hand_over = true;
        return d;
    }
    if (s.failback_due && eligible) {
        Decision d = make(State::second, 47,
                          fmt::format("automatic failback to the preferred node {}", s.peer));
        d.hand_over = true;
        return d;
    }
    if (peer_receives_writes(s.link)) {
        return make(State::prim, 48, s.link == Link::sync_source
                                         ? fmt::format("resyncing {}, which receives every write", s.peer)
                                         : fmt::format("{} is SECOND and receives every write", s.peer));
    }
    std::string why = s.liveness == Liveness::lost
                          ? fmt::format("{} lost on every heartbeat path", s.peer)
                          : fmt::format("{} does not receive the writes (replication {})", s.peer,
                                        to_string(s.link));
    return make(State::alone, 49, std::move(why));
}

// Why this node may not take the VM over (rule 64); empty = it may.
std::string held_back(const Snapshot& s) {
    if (s.operator_second) {
        return fmt::format("started as secondary by the operator (`vmha second`): waiting for {} to "
                           "run the VM", s.peer);
    }
    if (s.failover_off) return "failover is off (`vmha failover on` allows it)";
    return {};
}

Decision decide_idle(const Snapshot& s, std::uint64_t grant) {
    if (s.operator_prim && !peer_reports_running(s) && may_start_vm_on(s.data)) {
        if (s.granted_to_peer != 0) {
            return make(State::wait, 62, fmt::format("the operator chose this node to run the VM; "
                                                     "withdrawing the grant to {} first", s.peer));
        }
        return make(running_state(s), 62, "the operator chose this node to run the VM (`vmha prim`)");
    }
    if (s.link == Link::split_brain) {
        return make(State::wait, 50,
                    fmt::format("split brain with {}: both wrote without the other; choose the "
                                "copy to keep with `vmha prim --force` on its node", s.peer));
    }
    if (s.unfit) return make(State::wait, 51, fmt::format("{}; this node is unfit to run the VM", *s.unfit));
    if (s.vm_failed && !s.restart_left) {
        return make(State::wait, 51, fmt::format("{}; no restart is left on this node", *s.vm_failed));
    }
    if (peer_reports_running(s)) {
        std::string why = s.link == Link::sync_target
                              ? fmt::format("{} runs the VM; resyncing from it", s.peer)
                              : fmt::format("{} runs the VM; receiving its writes", s.peer);
        return make(State::second, 52, std::move(why));
    }
    if (s.fresh_pair && s.channel_up && s.report && s.preferred) {
        Decision d = make(State::wait, 63, fmt::format("neither copy holds data yet: the images here, "
                                                       "on the preferred node, become the initial data"));
        d.declare_initial = true;
        return d;
    }
    if (!may_start_vm_on(s.data)) {
        return make(State::wait, 53, fmt::format("the data here is {}; waiting for an UpToDate peer",
                                                 to_string(s.data)));
    }
    if (s.channel_up && s.report && s.standing == Standing::behind) {
        return make(State::wait, 53, fmt::format("{} holds newer data than this node", s.peer));
    }
    if (s.channel_up && s.report && s.standing == Standing::diverged) {
        return make(State::wait, 53, fmt::format("split brain with {}: both wrote without the "
                                                 "other", s.peer));
    }
    // A standing grant, or a hand-over in progress, binds even if the heartbeats fall silent
    // while the channel is still up: the peer may be starting the VM on it.
    if (grant != 0) return make(State::second, 58, fmt::format("{} is taking the VM over", s.peer));
    if (s.handing_over && s.channel_up && s.report) {
        return make(State::second, 59, fmt::format("handing the VM over to {}", s.peer));
    }
    if (s.imagesync_settling && s.link == Link::down) {
        return make(State::wait, 53, fmt::format("imagesyncd has just started; waiting for it to "
                                                 "reach {}'s", s.peer));
    }
    if (std::string why = held_back(s); !why.empty()) {
        if (s.liveness == Liveness::lost) {
            return make(State::wait, 64, fmt::format("{} lost on every heartbeat path, but {}", s.peer, why));
        }
        if (s.liveness == Liveness::unknown && s.silent_since_start) {
            return make(State::wait, 64, fmt::format("{} not heard since start, and {}", s.peer, why));
        }
    }
    if (s.liveness == Liveness::lost) {
        if (s.peer_renewed_since_lost) {
            return make(State::wait, 54,
                        fmt::format("{} lost on every heartbeat path, but the witness says it renewed "
                                    "its lease since: it ran the VM on alone and its copy is newer "
                                    "(start here anyway with `vmha prim --force`)", s.peer));
        }
        if (!s.current_when_lost) {
            return make(State::wait, 54,
                        fmt::format("{} lost on every heartbeat path, but this copy was not in sync "
                                    "with it when it was last heard; it may hold newer data (start "
                                    "here anyway with `vmha prim --force`)", s.peer));
        }
        return make(State::alone, 54,
                    fmt::format("{} lost on every heartbeat path; starting the VM here", s.peer));
    }
    if (s.liveness == Liveness::unknown) {
        if (s.silent_since_start && s.may_start_alone) {
            return make(State::alone, 55,
                        fmt::format("{} not heard since start, and this node ran the VM alone "
                                    "before it stopped", s.peer));
        }
        return make(State::wait, 56,
                    s.silent_since_start
                        ? fmt::format("{} not heard since start; it may hold newer data (start "
                                      "here anyway with `vmha prim --force`)", s.peer)
                        : fmt::format("waiting to hear from {}", s.peer));
    }
    if (!s.channel_up || !s.report) {
        return make(State::wait, 57, fmt::format("{} is alive but its module state is unknown "
                                                 "(control channel down)", s.peer));
    }
    if (grant != 0) {
        return make(State::second, 58, fmt::format("{} is taking the VM over", s.peer));
    }
    if (s.handing_over) {
        return make(State::second, 59, fmt::format("handing the VM over to {}", s.peer));
    }
    std::string why = reason_to_run(s);
    if (!why.empty() && !s.report->handing_over) {
        const bool takeover = !s.report->fit || s.report->state == State::stop;
        if (std::string held = held_back(s); !held.empty() && (s.operator_second || takeover)) {
            return make(State::wait, 64, fmt::format("{}, but {}", why, held));
        }
    }
    if (!why.empty() && s.standing != Standing::same && s.standing != Standing::ahead) {
        return make(State::wait, 60, fmt::format("{}, but the data here is not known to be as new "
                                                 "as on {}", why, s.peer));
    }
    if (!why.empty()) {
        if (s.own_claim != 0 && s.report->grant == s.own_claim) {
            return make(running_state(s), 60, fmt::format("{}; {} confirmed", why, s.peer));
        }
        Decision d = make(s.current == State::stop ? State::wait : s.current, 60,
                          fmt::format("{}; waiting for {} to confirm", why, s.peer));
        if (d.next != State::second) d.next = State::wait;
        d.claim = true;
        return d;
    }
    return make(State::second, 61, fmt::format("{} should run the VM (preferred)", s.peer));
}

// Rules 65 and 66: with a witness, a node writes only while it holds the lease or its peer
// agrees, and starts writing only with the lease and the hold-off over, or with the peer's grant
// while it agrees.
Decision apply_lease_rules(const Snapshot& s, Decision d) {
    if (!s.witness) return d;
    if (runs_vm(s.current) && runs_vm(d.next)) {
        if (s.lease_held || s.peer_agrees) return d;
        Decision f = make(State::wait, 65,
                          fmt::format("self-fence: {} is not in agreement and the lease is not held "
                                      "({}); stopped writing before the lease can expire",
                                      s.peer, s.lease_why));
        f.grant = d.grant;
        f.power_off = true;  // its disks refuse writes already: a guest shutdown could only hang
        return f;
    }
    if (runs_vm(s.current) || !runs_vm(d.next)) return d;
    if (d.rule == 60 && s.peer_agrees) return d;  // the peer's grant, and it does not write
    if (s.lease_held && s.hold_off_done) {
        d.contend = true;  // starts by the lease: its reports must not read as agreement
        return d;
    }
    Decision w = make(State::wait, 66,
                      s.lease_held
                          ? fmt::format("{}; the lease is held, waiting out the hold-off for {} to "
                                        "have stopped writing", d.reason, s.peer)
                          : fmt::format("{}; but the lease is not held: {}", d.reason, s.lease_why));
    w.contend = true;
    w.claim = d.claim || d.rule == 60;  // a claim stands while the lease is sought
    w.grant = d.grant;
    return w;
}

// Rule 67: with a fencing hook, the VM is started without a live peer only once the hook has
// fenced that peer (after the lease rules: the hook runs only for a start they allow).
Decision apply_fence_rule(const Snapshot& s, Decision d) {
    if (!s.fence_hook || runs_vm(s.current) || !runs_vm(d.next)) return d;
    if ((s.liveness == Liveness::alive && s.channel_up) || s.peer_fenced) return d;
    Decision w = make(State::wait, 67,
                      s.fence_failed
                          ? fmt::format("{}; but the fencing hook failed: {} (run again shortly)", d.reason,
                                        *s.fence_failed)
                          : fmt::format("{}; fencing {} first (the fencing hook)", d.reason, s.peer));
    w.run_fence = true;
    w.contend = d.contend;
    w.claim = d.claim;
    w.grant = d.grant;
    return w;
}

}  // namespace

std::string_view to_string(Standing standing) {
    switch (standing) {
        case Standing::unknown: return "unknown";
        case Standing::same: return "same";
        case Standing::ahead: return "ahead";
        case Standing::behind: return "behind";
        case Standing::diverged: return "diverged";
    }
    return "?";
}

bool peer_eligible(const Snapshot& s) {
    if (s.liveness != Liveness::alive || !s.channel_up || !s.report) return false;
    const PeerReport& p = *s.report;
    return (p.state == State::second || p.state == State::wait) &&
           p.data == DataState::up_to_date && p.fit && s.link == Link::connected;
}

Decision decide(const Snapshot& s) {
    const std::uint64_t grant = compute_grant(s);
    Decision d = [&] {
        if (!s.started) return make(State::stop, 10, "stopped by the operator");
        if (!s.imagesync_up) {
            if (runs_vm(s.current)) {
                return make(s.current, 20, "imagesyncd is not answering; the VM's disks wait for it");
            }
            return make(State::wait, 21, "imagesyncd is not running");
        }
        if (s.refused && !runs_vm(s.current)) {
            return make(State::wait, 30, fmt::format("{} refused to pair: {}", s.peer, *s.refused));
        }
        return runs_vm(s.current) ? decide_running(s) : decide_idle(s, grant);
    }();
    d.grant = grant;
    d = apply_lease_rules(s, std::move(d));
    d = apply_fence_rule(s, std::move(d));
    if (runs_vm(d.next) && !runs_vm(s.current) && !may_start_vm_on(s.data)) {
        internal_error(fmt::format("rule {} would start the VM on {} data", d.rule, to_string(s.data)));
    }
    return d;
}

Status check_may_start_vm(DataState data, const std::string& module, const std::string& node) {
    if (may_start_vm_on(data)) return {};
    return Error(errc::not_up_to_date,
                 fmt::format("module \"{}\": the data on {} is {}; only an UpToDate copy may start "
                             "the VM", module, node, to_string(data)));
}

}  // namespace vmha::module
