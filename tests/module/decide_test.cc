// The module's decision table (vmha/module/decide.h): one test per rule, each a snapshot that
// reaches it, plus properties checked over random snapshots.
#include <random>
#include <set>

#include <gtest/gtest.h>

#include <vmha/module/decide.h>

namespace vmha::module {
namespace {

// A started node, imagesync up and UpToDate, the peer alive and SECOND in sync.
Snapshot base(State current) {
    Snapshot s;
    s.self = "hv1";
    s.peer = "hv2";
    s.current = current;
    s.started = true;
    s.imagesync_up = true;
    s.data = DataState::up_to_date;
    s.link = Link::connected;
    s.standing = Standing::same;
    s.liveness = Liveness::alive;
    s.channel_up = true;
    PeerReport r;
    r.state = State::second;
    r.data = DataState::up_to_date;
    s.report = r;
    return s;
}

Snapshot idle_peer_running(State current) {
    Snapshot s = base(current);
    s.report->state = State::prim;
    return s;
}

struct Expect {
    int rule;
    State next;
};

void check(const Snapshot& s, Expect e) {
    const Decision d = decide(s);
    EXPECT_EQ(d.rule, e.rule) << d.reason;
    EXPECT_EQ(d.next, e.next) << to_string(d.next) << ": " << d.reason;
    EXPECT_FALSE(d.reason.empty());
}

TEST(Decide, Rule10_StoppedByTheOperator) {
    for (State st : kAllStates) {
        Snapshot s = base(st);
        s.started = false;
        check(s, {10, State::stop});
    }
}

TEST(Decide, Rule20_RunningNodeWaitsForImagesync) {
    for (State st : {State::prim, State::alone}) {
        Snapshot s = base(st);
        s.imagesync_up = false;
        check(s, {20, st});
    }
}

TEST(Decide, Rule21_IdleNodeWithoutImagesync) {
    for (State st : {State::stop, State::wait, State::second}) {
        Snapshot s = base(st);
        s.imagesync_up = false;
        check(s, {21, State::wait});
    }
}

TEST(Decide, Rule30_RefusedPairingKeepsAnIdleNodeWaiting) {
    Snapshot s = base(State::second);
    s.refused = "the config differs in replication.timeout";
    check(s, {30, State::wait});
    Snapshot r = base(State::prim);  // a running node keeps running
    r.refused = "x";
    EXPECT_TRUE(runs_vm(decide(r).next));
}

TEST(Decide, Rule40_UnfitRunningNodeStops) {
    Snapshot s = base(State::prim);
    s.unfit = "checker br0: link down";
    check(s, {40, State::wait});
}

TEST(Decide, Rule41_BothRunning) {
    Snapshot s = idle_peer_running(State::alone);
    s.preferred = true;
    check(s, {41, State::alone});
    s.preferred = false;
    check(s, {41, State::wait});
    s.preferred = true;
    s.vm_disks_lost = true;  // this node's VM lost its disks: the peer took over
    check(s, {41, State::wait});
    Snapshot b = base(State::alone);
    b.link = Link::split_brain;
    b.preferred = false;
    check(b, {41, State::wait});
}

TEST(Decide, Rule42_FailoverToAnEligiblePeer) {
    Snapshot s = base(State::prim);
    s.failover = "checker storage: exit status 3";
    Decision d = decide(s);
    EXPECT_EQ(d.rule, 42);
    EXPECT_EQ(d.next, State::second);
    EXPECT_TRUE(d.hand_over);
    Snapshot v = base(State::prim);
    v.vm_failed = "domain web1 shut off (crashed)";
    v.restart_left = false;
    EXPECT_EQ(decide(v).rule, 42);
}

TEST(Decide, Rule43_RestartWhileTheBudgetLasts) {
    Snapshot s = base(State::prim);
    s.vm_failed = "domain web1 shut off (crashed)";
    Decision d = decide(s);
    EXPECT_EQ(d.rule, 43);
    EXPECT_EQ(d.next, State::prim);
    EXPECT_TRUE(d.restart_vm);
}

TEST(Decide, Rule44_NoRestartLeftAndNoPeer) {
    Snapshot s = base(State::alone);
    s.vm_failed = "crashed";
    s.restart_left = false;
    s.liveness = Liveness::lost;
    s.channel_up = false;
    s.report.reset();
    s.link = Link::down;
    check(s, {44, State::wait});
}

TEST(Decide, Rule45_FailoverWantedButNoPeer) {
    Snapshot s = base(State::prim);
    s.failover = "checker x";
    s.report->data = DataState::inconsistent;
    check(s, {45, State::prim});
}

TEST(Decide, Rule46_Swap) {
    Snapshot s = base(State::prim);
    s.swap_requested = true;
    Decision d = decide(s);
    EXPECT_EQ(d.rule, 46);
    EXPECT_TRUE(d.hand_over);
    s.link = Link::sync_source;  // the peer is not in sync yet: no swap
    EXPECT_NE(decide(s).rule, 46);
}

TEST(Decide, Rule47_AutomaticFailback) {
    Snapshot s = base(State::prim);
    s.failback_due = true;
    Decision d = decide(s);
    EXPECT_EQ(d.rule, 47);
    EXPECT_TRUE(d.hand_over);
}

TEST(Decide, Rules48And49_PrimOrAlone) {
    check(base(State::alone), {48, State::prim});
    Snapshot s = base(State::prim);
    s.link = Link::sync_source;
    check(s, {48, State::prim});
    s.link = Link::down;
    check(s, {49, State::alone});
}

TEST(Decide, Rule50_SplitBrainKeepsAnIdleNodeWaiting) {
    Snapshot s = base(State::second);
    s.link = Link::split_brain;
    check(s, {50, State::wait});
}

TEST(Decide, Rule51_UnfitIdleNode) {
    Snapshot s = base(State::second);
    s.unfit = "checker br0";
    check(s, {51, State::wait});
    Snapshot v = base(State::wait);
    v.preferred = true;
    v.vm_failed = "the VM failed to start";
    v.restart_left = false;
    check(v, {51, State::wait});
}

TEST(Decide, Rule52_PeerRunsTheVm) {
    check(idle_peer_running(State::wait), {52, State::second});
    Snapshot s = idle_peer_running(State::wait);
    s.data = DataState::outdated;  // even with stale data: it will be resynced
    check(s, {52, State::second});
    s.report->disks_lost = true;  // a peer whose VM lost its disks does not count as running
    EXPECT_NE(decide(s).rule, 52);
}

TEST(Decide, Rule63_ANewPairDeclaresThePreferredNodesImages) {
    Snapshot s = base(State::wait);
    s.data = DataState::inconsistent;
    s.fresh_pair = true;
    s.preferred = true;
    Decision d = decide(s);
    EXPECT_EQ(d.rule, 63);
    EXPECT_EQ(d.next, State::wait);
    EXPECT_TRUE(d.declare_initial);
    s.preferred = false;  // the other node waits for the full resync
    EXPECT_EQ(decide(s).rule, 53);
    EXPECT_FALSE(decide(s).declare_initial);
}

TEST(Decide, Rule53_NotUpToDateOrBehind) {
    for (DataState d : {DataState::unknown, DataState::inconsistent, DataState::outdated}) {
        Snapshot s = base(State::second);
        s.data = d;
        s.liveness = Liveness::lost;  // even with the peer gone
        check(s, {53, State::wait});
    }
    Snapshot b = base(State::second);
    b.standing = Standing::behind;
    check(b, {53, State::wait});
    b.standing = Standing::diverged;
    check(b, {53, State::wait});
    Snapshot settling = base(State::wait);
    settling.imagesync_settling = true;
    settling.link = Link::down;
    settling.liveness = Liveness::lost;
    check(settling, {53, State::wait});
}

TEST(Decide, Rule54_PeerLost) {
    Snapshot s = base(State::second);
    s.liveness = Liveness::lost;
    s.channel_up = false;
    s.report.reset();
    s.link = Link::down;
    s.current_when_lost = true;
    check(s, {54, State::alone});
    s.current_when_lost = false;  // this copy was not in sync when the peer was last heard
    check(s, {54, State::wait});
}

TEST(Decide, Rules55And56_PeerNeverHeard) {
    Snapshot s = base(State::wait);
    s.liveness = Liveness::unknown;
    s.channel_up = false;
    s.report.reset();
    s.link = Link::down;
    check(s, {56, State::wait});  // not yet the grace
    s.silent_since_start = true;
    check(s, {56, State::wait});  // not the last to run it alone
    s.may_start_alone = true;
    check(s, {55, State::alone});
}

TEST(Decide, Rule57_PeerAliveStateUnknown) {
    Snapshot s = base(State::second);
    s.channel_up = false;
    check(s, {57, State::wait});
}

TEST(Decide, Rule58_GrantedThePeersClaim) {
    Snapshot s = base(State::second);
    s.report->claim = 77;
    Decision d = decide(s);
    EXPECT_EQ(d.rule, 58);
    EXPECT_EQ(d.grant, 77u);
    s.standing = Standing::ahead;  // never grant a claim from an older copy
    EXPECT_EQ(decide(s).grant, 0u);
    Snapshot running = base(State::prim);  // a running node never grants
    running.report->claim = 5;
    EXPECT_EQ(decide(running).grant, 0u);
}

TEST(Decide, Rule59_HandingOver) {
    Snapshot s = base(State::second);
    s.handing_over = true;
    s.preferred = true;
    check(s, {59, State::second});
}

TEST(Decide, Rule60_ClaimThenRunWithTheGrant) {
    Snapshot s = base(State::wait);
    s.preferred = true;
    Decision d = decide(s);
    EXPECT_EQ(d.rule, 60);
    EXPECT_TRUE(d.claim);
    EXPECT_EQ(d.next, State::wait);
    s.own_claim = 9;
    s.report->grant = 9;
    check(s, {60, State::prim});
    s.link = Link::down;
    check(s, {60, State::alone});
    // Reasons to run without being preferred.
    for (int why = 0; why < 4; ++why) {
        Snapshot t = base(State::second);
        if (why == 0) t.report->handing_over = true;
        if (why == 1) t.report->data = DataState::outdated;
        if (why == 2) t.report->fit = false;
        if (why == 3) t.report->state = State::stop;
        EXPECT_EQ(decide(t).rule, 60) << why;
        EXPECT_TRUE(decide(t).claim) << why;
    }
    // Not known to be as new as the peer: no claim.
    Snapshot u = base(State::wait);
    u.preferred = true;
    u.standing = Standing::unknown;
    Decision du = decide(u);
    EXPECT_EQ(du.rule, 60);
    EXPECT_FALSE(du.claim);
}

// With a witness: a running node without the lease and without its peer's agreement fences.
TEST(Decide, Rule65_SelfFenceWithoutLeaseOrAgreement) {
    for (State st : {State::prim, State::alone}) {
        Snapshot s = base(st);
        s.witness = true;
        s.liveness = Liveness::lost;
        s.channel_up = false;
        s.report.reset();
        s.link = Link::down;
        s.lease_why = "the witness did not answer";
        check(s, {65, State::wait});
        EXPECT_NE(decide(s).reason.find("the witness did not answer"), std::string::npos);
        EXPECT_TRUE(decide(s).power_off) << "a self-fence powers the VM off, no guest shutdown";
        EXPECT_FALSE(decide(s).hand_over);
        s.lease_held = true;
        check(s, {49, State::alone});
        EXPECT_FALSE(decide(s).power_off);
        // Witness down while the pair agrees: nothing changes.
        Snapshot t = base(st);
        t.witness = true;
        t.peer_agrees = true;
        check(t, {48, State::prim});
        t.peer_agrees = false;
        check(t, {65, State::wait});
    }
}

// With a witness: a node that would start the VM on the peer's loss (or alone since start, or
// the operator's choice) contends for the lease and starts only with it, the hold-off over.
TEST(Decide, Rule66_StartOnlyWithTheLease) {
    Snapshot s = base(State::second);
    s.witness = true;
    s.liveness = Liveness::lost;
    s.channel_up = false;
    s.report.reset();
    s.link = Link::down;
    s.current_when_lost = true;
    s.lease_why = "the witness says hv2 holds it for 4000 ms more";
    Decision d = decide(s);
    EXPECT_EQ(d.rule, 66);
    EXPECT_EQ(d.next, State::wait);
    EXPECT_TRUE(d.contend);
    s.lease_held = true;  // held, but the hold-off is not over
    check(s, {66, State::wait});
    s.hold_off_done = true;
    d = decide(s);
    EXPECT_EQ(d.rule, 54);
    EXPECT_EQ(d.next, State::alone);
    EXPECT_TRUE(d.contend);  // it runs by the lease: its reports must not read as agreement
    // The peer renewed its lease after it was lost: it went on alone; not here.
    s.peer_renewed_since_lost = true;
    check(s, {54, State::wait});
    // With the peer's grant while it agrees, no lease is needed (a swap with the witness down).
    Snapshot g = base(State::wait);
    g.witness = true;
    g.preferred = true;
    g.own_claim = 9;
    g.report->grant = 9;
    g.peer_agrees = true;
    check(g, {60, State::prim});
    g.peer_agrees = false;  // the granting peer contends or writes: the lease decides
    d = decide(g);
    EXPECT_EQ(d.rule, 66);
    EXPECT_TRUE(d.claim);  // the claim stands meanwhile
}

TEST(Decide, Rule61_ThePeerShouldRunIt) { check(base(State::wait), {61, State::second}); }

// Two idle nodes, the preferred one behind: the newer copy claims the VM (rule 60), the
// preferred one waits for it (rule 53), and grants. Without this, each waited for the other.
TEST(Decide, Rule60_TheNewerCopyClaimsOverThePreferredOne) {
    Snapshot newer = base(State::wait);  // not preferred
    newer.standing = Standing::ahead;
    Decision d = decide(newer);
    EXPECT_EQ(d.rule, 60) << d.reason;
    EXPECT_TRUE(d.claim);
    EXPECT_NE(d.reason.find("newer"), std::string::npos) << d.reason;
    // Behind, or not known to be as new: never a reason to run.
    for (Standing st : {Standing::behind, Standing::unknown, Standing::diverged}) {
        Snapshot t = base(State::wait);
        t.standing = st;
        EXPECT_FALSE(decide(t).claim) << to_string(st);
        EXPECT_NE(decide(t).next, State::prim) << to_string(st);
    }
}

TEST(Decide, Rule62_TheOperatorChoseThisNode) {
    // `vmha prim`: the peer silent since start, this node's copy UpToDate: it runs the VM.
    Snapshot s = base(State::wait);
    s.liveness = Liveness::unknown;
    s.silent_since_start = true;
    s.channel_up = false;
    s.report.reset();
    s.link = Link::down;
    check(s, {56, State::wait});
    s.operator_prim = true;
    check(s, {62, State::alone});
    // Chosen over a split brain (after `prim --force` promoted this copy).
    Snapshot b = base(State::wait);
    b.link = Link::split_brain;
    b.operator_prim = true;
    check(b, {62, State::alone});
    // A grant this node gave the peer is withdrawn first.
    Snapshot g = base(State::second);
    g.operator_prim = true;
    g.granted_to_peer = 5;
    g.report->claim = 5;
    const Decision dg = decide(g);
    EXPECT_EQ(dg.rule, 62);
    EXPECT_EQ(dg.next, State::wait);
    EXPECT_EQ(dg.grant, 0u);
    // Never while the peer runs the VM, never on data that is not UpToDate.
    Snapshot r = idle_peer_running(State::second);
    r.operator_prim = true;
    check(r, {52, State::second});
    Snapshot o = base(State::wait);
    o.operator_prim = true;
    o.data = DataState::outdated;
    EXPECT_NE(decide(o).rule, 62);
}

TEST(Decide, Rule64_FailoverOffOrSecondHoldsAnIdleNodeBack) {
    for (bool second : {false, true}) {
        // The peer lost while this copy was current: no takeover.
        Snapshot s = base(State::second);
        s.liveness = Liveness::lost;
        s.current_when_lost = true;
        s.channel_up = false;
        s.report.reset();
        s.link = Link::down;
        check(s, {54, State::alone});
        (second ? s.operator_second : s.failover_off) = true;
        check(s, {64, State::wait});
        // Silent since start, this node last ran it alone: no start.
        Snapshot a = base(State::wait);
        a.liveness = Liveness::unknown;
        a.silent_since_start = true;
        a.may_start_alone = true;
        a.channel_up = false;
        a.report.reset();
        check(a, {55, State::alone});
        (second ? a.operator_second : a.failover_off) = true;
        check(a, {64, State::wait});
        // The peer unfit or stopped: no claim.
        for (int why = 0; why < 2; ++why) {
            Snapshot t = base(State::second);
            if (why == 0) t.report->fit = false;
            if (why == 1) t.report->state = State::stop;
            (second ? t.operator_second : t.failover_off) = true;
            const Decision d = decide(t);
            EXPECT_EQ(d.rule, 64) << why;
            EXPECT_FALSE(d.claim) << why;
        }
        // A swap (the peer hands the VM over) still happens.
        Snapshot h = base(State::second);
        h.report->handing_over = true;
        (second ? h.operator_second : h.failover_off) = true;
        EXPECT_EQ(decide(h).rule, 60);
        EXPECT_TRUE(decide(h).claim);
    }
    // Failover off still lets the preferred node claim on a first start; `second` does not.
    Snapshot p = base(State::wait);
    p.preferred = true;
    p.failover_off = true;
    EXPECT_EQ(decide(p).rule, 60);
    p.failover_off = false;
    p.operator_second = true;
    check(p, {64, State::wait});
}

TEST(Decide, FailoverOffKeepsARunningNodeFromHandingOver) {
    Snapshot s = base(State::prim);
    s.vm_failed = "the VM crashed";
    s.restart_left = false;
    check(s, {42, State::second});
    s.failover_off = true;
    check(s, {44, State::wait});
    EXPECT_NE(decide(s).reason.find("failover is off"), std::string::npos);
    Snapshot f = base(State::prim);
    f.failover = "checker ping failed";
    f.failover_off = true;
    check(f, {45, State::prim});
    // The operator's swap still hands it over; local restarts still happen.
    Snapshot w = base(State::prim);
    w.swap_requested = true;
    w.failover_off = true;
    check(w, {46, State::second});
    Snapshot r = base(State::prim);
    r.vm_failed = "the VM crashed";
    r.failover_off = true;
    check(r, {43, State::prim});
}

TEST(Decide, EveryRuleIsReachedByTheTests) {
    // The rule numbers of the table in decide.h; the tests above reach each.
    const std::set<int> table = {10, 20, 21, 30, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50,
                                 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66};
    std::set<int> seen;
    std::mt19937_64 rng(7);
    auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<std::uint64_t>(n)); };
    for (int i = 0; i < 200000; ++i) {
        Snapshot s = base(kAllStates[pick(5)]);
        s.started = pick(10) != 0;
        s.imagesync_up = pick(10) != 0;
        s.imagesync_settling = pick(8) == 0;
        s.imagesync_primary = pick(4) != 0;
        s.fresh_pair = pick(8) == 0;
        s.data = static_cast<DataState>(pick(4));
        s.link = static_cast<Link>(pick(6));
        s.standing = static_cast<Standing>(pick(5));
        s.liveness = static_cast<Liveness>(pick(3));
        s.silent_since_start = pick(2) != 0;
        s.current_when_lost = pick(2) != 0;
        s.channel_up = pick(4) != 0;
        if (pick(5) == 0) s.report.reset();
        if (s.report) {
            s.report->state = kAllStates[pick(5)];
            s.report->data = static_cast<DataState>(pick(4));
            s.report->fit = pick(5) != 0;
            s.report->claim = pick(3) == 0 ? 11 : 0;
            s.report->grant = pick(3) == 0 ? 22 : 0;
            s.report->handing_over = pick(6) == 0;
            s.report->disks_lost = pick(8) == 0;
        }
        if (pick(8) == 0) s.refused = "config";
        s.may_start_alone = pick(2) != 0;
        s.preferred = pick(2) != 0;
        s.own_claim = pick(2) == 0 ? 22 : 0;
        s.handing_over = pick(6) == 0;
        if (pick(8) == 0) s.unfit = "u";
        if (pick(8) == 0) s.failover = "f";
        if (pick(6) == 0) s.vm_failed = "v";
        s.restart_left = pick(2) != 0;
        s.vm_disks_lost = pick(8) == 0;
        s.swap_requested = pick(6) == 0;
        s.failback_due = pick(6) == 0;
        s.failover_off = pick(4) == 0;
        s.operator_prim = pick(8) == 0;
        s.operator_second = pick(8) == 0;
        s.witness = pick(3) == 0;
        if (s.witness) {
            s.lease_held = pick(2) == 0;
            s.peer_agrees = pick(2) == 0;
            s.hold_off_done = pick(2) == 0;
            s.peer_renewed_since_lost = pick(4) == 0;
            s.lease_why = "w";
        }
        const Decision d = decide(s);
        // With a witness: writing needs the lease or the peer's agreement, and starting to write
        // the lease with the hold-off over, or the peer's grant while it agrees.
        if (s.witness && runs_vm(d.next)) {
            ASSERT_TRUE(s.lease_held || s.peer_agrees) << d.rule << ": " << d.reason;
            if (!runs_vm(s.current)) {
                ASSERT_TRUE((s.lease_held && s.hold_off_done) || (d.rule == 60 && s.peer_agrees))
                    << d.rule << ": " << d.reason;
            }
        }
        seen.insert(d.rule);
        ASSERT_TRUE(table.count(d.rule)) << d.rule;
        // Only an UpToDate copy ever starts the VM (decide() aborts otherwise; checked anyway).
        if (runs_vm(d.next) && !runs_vm(s.current)) {
            ASSERT_TRUE(may_start_vm_on(s.data)) << d.rule;
            // ... and only with the peer lost while current, never heard while this node ran
            // alone, or with the peer's grant of this node's claim.
            const bool lost = s.liveness == Liveness::lost && s.current_when_lost;
            const bool alone = s.liveness == Liveness::unknown && s.silent_since_start && s.may_start_alone;
            const bool granted = s.channel_up && s.report && s.own_claim != 0 && s.report->grant == s.own_claim;
            ASSERT_TRUE(lost || alone || granted || s.operator_prim) << d.rule << ": " << d.reason;
            // Failover off or `vmha second`: never a start on the peer's loss.
            if ((s.failover_off || s.operator_second) && !s.operator_prim) {
                ASSERT_TRUE(granted) << d.rule;
            }
            // The operator's choice never starts the VM beside a peer that runs it.
            if (s.operator_prim && !granted) {
                ASSERT_FALSE(s.channel_up && s.report && s.report->runs()) << d.rule;
            }
        }
        // A node that runs the VM never grants a claim.
        if (runs_vm(s.current)) {
            ASSERT_EQ(d.grant, 0u);
        }
        // Never a grant to a copy older than this one.
        if (d.grant != 0) {
            ASSERT_TRUE(s.standing == Standing::same || s.standing == Standing::behind);
        }
    }
    EXPECT_EQ(seen, table);
}

TEST(Decide, CheckMayStartVmIsTheOneGate) {
    EXPECT_TRUE(check_may_start_vm(DataState::up_to_date, "web1", "hv1").ok());
    for (DataState d : {DataState::unknown, DataState::inconsistent, DataState::outdated}) {
        auto st = check_may_start_vm(d, "web1", "hv1");
        ASSERT_FALSE(st.ok());
        EXPECT_TRUE(st.error().is(errc::not_up_to_date));
        EXPECT_NE(st.error().message.find("hv1"), std::string::npos);
    }
}

}  // namespace
}  // namespace vmha::module
