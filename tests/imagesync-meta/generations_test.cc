// Generations and the sync decision: scenario tests, one or more per row of the decision table
// in generations.h, each checked from both nodes' points of view.
#include <set>

#include <gtest/gtest.h>

#include "meta/generations.h"

namespace imagesync::meta {
namespace {

// Deterministic, distinct, non-reserved ids.
std::uint64_t id(int n) { return 0x1000 + static_cast<std::uint64_t>(n); }

// Two nodes driven through the same transitions the daemon will make.
struct Pair {
    NodeMeta a;
    NodeMeta b;
    int next_id = 1;
    std::uint64_t fresh() { return id(next_id++); }

    // A has the image (declared initial source), B is new; the initial full sync completes.
    static Pair connected_in_sync() {
        Pair p;
        p.a = NodeMeta::initial_source(p.fresh());
        p.b = NodeMeta::just_created();
        p.b.start_full_sync_target();
        p.b.finish_sync_target(p.a.gen);
        p.a.finish_sync_source();
        return p;
    }
    // `n` starts writing without its peer (after promotion or peer loss).
    void alone(NodeMeta& n) {
        if (!n.was_primary) n.promote();
        n.new_generation_when_alone(fresh());
    }
    // A crash while primary, then the next start.
    static void crash_and_restart(NodeMeta& n) {
        ASSERT_TRUE(n.was_primary);
        n.note_start();
    }
    // `source` → `target` bitmap resync that completes.
    static void bitmap_resync(NodeMeta& source, NodeMeta& target) {
        target.start_bitmap_sync_target();
        target.finish_sync_target(source.gen);
        source.finish_sync_source();
    }
};

struct Expect {
    SyncKind kind;
    int rule;
    bool self_al = false;
    bool peer_al = false;
};

// Checks decide() from self's side and, mirrored, from the peer's side.
void expect_decision(const NodeMeta& self, const NodeMeta& peer, Roles roles, Expect want) {
    SyncDecision d = decide(self, peer, roles);
    EXPECT_EQ(to_string(d.kind), to_string(want.kind)) << d.reason;
    EXPECT_EQ(d.rule, want.rule) << d.reason;
    EXPECT_EQ(d.self_activity_log_joins, want.self_al) << d.reason;
    EXPECT_EQ(d.peer_activity_log_joins, want.peer_al) << d.reason;
    EXPECT_FALSE(d.reason.empty());

    SyncDecision m = decide(peer, self, roles.mirrored());
    EXPECT_EQ(to_string(m.kind), to_string(mirror(want.kind))) << m.reason;
    EXPECT_EQ(m.self_activity_log_joins, want.peer_al) << m.reason;
    EXPECT_EQ(m.peer_activity_log_joins, want.self_al) << m.reason;
}

// ----- Generations operations ----------------------------------------------------------------

TEST(Generations, NewGenerationWhenAloneMovesCurrentToBitmap) {
    Generations g;
    g.current = id(1);
    g.new_generation_when_alone(id(2));
    EXPECT_EQ(g.current, id(2));
    EXPECT_EQ(g.bitmap, id(1));
    EXPECT_EQ(g.history, (std::array<std::uint64_t, kHistorySize>{}));
}

TEST(Generations, SecondNewGenerationPushesOldBitmapIntoHistory) {
    Generations g;
    g.current = id(1);
    g.new_generation_when_alone(id(2));
    g.new_generation_when_alone(id(3));
    EXPECT_EQ(g.current, id(3));
    EXPECT_EQ(g.bitmap, id(2));
    EXPECT_EQ(g.history[0], id(1));
}

TEST(Generations, HistoryKeepsTheNewestEntries) {
    Generations g;
    for (int i = 1; i <= 10; ++i) g.push_history(id(i));
    EXPECT_EQ(g.history, (std::array<std::uint64_t, kHistorySize>{id(10), id(9), id(8), id(7)}));
    g.push_history(kJustCreated);  // reserved ids never enter history
    EXPECT_EQ(g.history[0], id(10));
}

TEST(Generations, ClearBitmapAfterSyncKeepsItInHistory) {
    Generations g;
    g.current = id(1);
    g.new_generation_when_alone(id(2));
    g.clear_bitmap_after_sync();
    EXPECT_EQ(g.bitmap, kNoGeneration);
    EXPECT_EQ(g.history[0], id(1));
    EXPECT_TRUE(g.in_history(id(1)));
}

TEST(Generations, FreshIdsAreNeverReserved) {
    std::set<std::uint64_t> seen;
    for (int i = 0; i < 1000; ++i) {
        std::uint64_t g = fresh_generation_id();
        EXPECT_FALSE(is_reserved_generation(g));
        seen.insert(g);
    }
    EXPECT_EQ(seen.size(), 1000u);
}

TEST(GenerationsDeathTest, ReusingAnIdIsABug) {
    Generations g;
    g.current = id(1);
    EXPECT_DEATH(g.new_generation_when_alone(id(1)), "already in use");
    EXPECT_DEATH(g.new_generation_when_alone(kJustCreated), "reserved");
}

TEST(NodeMeta, StartAfterCrashWhilePrimarySetsCrashedPrimary) {
    NodeMeta m = NodeMeta::initial_source(id(1));
    m.promote();
    m.note_start();
    EXPECT_TRUE(m.crashed_primary);
    EXPECT_FALSE(m.was_primary);

    NodeMeta clean = NodeMeta::initial_source(id(1));
    clean.promote();
    clean.demote_cleanly();
    clean.note_start();
    EXPECT_FALSE(clean.crashed_primary);
}

TEST(NodeMeta, FullSyncTargetForgetsItsGenerationsUntilFinished) {
    Pair p = Pair::connected_in_sync();
    p.b.start_full_sync_target();
    EXPECT_EQ(p.b.gen.current, kJustCreated);
    EXPECT_EQ(p.b.data_state, DataState::Inconsistent);
    EXPECT_TRUE(p.b.resync_in_progress());
    p.b.advance_resync(1 << 20);
    EXPECT_EQ(p.b.resync_cursor, 1u << 20);
    p.b.finish_sync_target(p.a.gen);
    EXPECT_EQ(p.b.gen, p.a.gen);
    EXPECT_EQ(p.b.data_state, DataState::UpToDate);
    EXPECT_FALSE(p.b.resync_in_progress());
}

TEST(NodeMetaDeathTest, PromotingANonUpToDateCopyIsABug) {
    NodeMeta m = NodeMeta::just_created();
    EXPECT_DEATH(m.promote(), "Inconsistent");
}

TEST(NodeMeta, OperatorCanForceAnOutdatedCopyButNotAnInconsistentOne) {
    Pair p = Pair::connected_in_sync();
    p.b.mark_outdated();
    ASSERT_TRUE(p.b.force_up_to_date());
    EXPECT_EQ(p.b.data_state, DataState::UpToDate);

    p.a.start_bitmap_sync_target();
    p.a.advance_resync(4096);
    vmha::Status st = p.a.force_up_to_date();
    ASSERT_FALSE(st);
    EXPECT_TRUE(st.error().is(vmha::errc::not_up_to_date));
    EXPECT_NE(st.error().message.find("stopped at byte 4096"), std::string::npos) << st.error().message;
}

// A forced node that then writes alone, against a peer that also wrote: still split brain.
TEST(Decide, ForcedOutdatedNodeThatWroteIsSplitBrainWithAPeerThatWrote) {
    Pair p = Pair::connected_in_sync();
    p.alone(p.a);         // A writes alone; B is away
    p.b.mark_outdated();  // B learns it is behind...
    ASSERT_TRUE(p.b.force_up_to_date());  // ...but the operator forces it anyway
    p.alone(p.b);
    expect_decision(p.a, p.b, {}, {SyncKind::split_brain, 90});
}

// ----- Scenarios, by rule --------------------------------------------------------------------

// Rule 41.
TEST(Decide, ConnectedPairIsInSync) {
    Pair p = Pair::connected_in_sync();
    expect_decision(p.a, p.b, {.self_primary = true}, {SyncKind::in_sync, 41});
}

// Rule 70 (and 50 from the other side).
TEST(Decide, SecondaryDownPrimaryWroteAloneSecondaryBackPrimaryIsBitmapSource) {
    Pair p = Pair::connected_in_sync();
    p.alone(p.a);
    expect_decision(p.a, p.b, {.self_primary = true}, {SyncKind::self_is_source_bitmap, 70});
    // After the resync completes, the pair is in sync again.
    Pair::bitmap_resync(p.a, p.b);
    expect_decision(p.a, p.b, {.self_primary = true}, {SyncKind::in_sync, 41});
}

// Rule 50.
TEST(Decide, PrimaryStoppedSecondaryPromotedAndWroteOldPrimaryIsBitmapTarget) {
    Pair p = Pair::connected_in_sync();
    p.a.promote();
    p.a.demote_cleanly();
    p.alone(p.b);
    expect_decision(p.a, p.b, {.peer_primary = true}, {SyncKind::self_is_target_bitmap, 50});
}

// Rule 50 with a crashed primary: its activity-log extents join the resync.
TEST(Decide, PrimaryCrashedSecondaryPromotedAndWroteOldPrimaryIsBitmapTargetWithItsAL) {
    Pair p = Pair::connected_in_sync();
    p.a.promote();       // A runs the VM, connected
    p.alone(p.b);        // A crashes; B is promoted and writes alone
    Pair::crash_and_restart(p.a);
    expect_decision(p.a, p.b, {.peer_primary = true},
                    {SyncKind::self_is_target_bitmap, 50, /*self_al=*/true, /*peer_al=*/false});
    // Once resynced, the crash flag is gone and the pair is in sync.
    Pair::bitmap_resync(p.b, p.a);
    EXPECT_FALSE(p.a.crashed_primary);
    expect_decision(p.a, p.b, {.peer_primary = true}, {SyncKind::in_sync, 41});
}

// Rule 90.
TEST(Decide, BothWroteAloneIsSplitBrain) {
    Pair p = Pair::connected_in_sync();
    p.alone(p.a);
    p.alone(p.b);
    expect_decision(p.a, p.b, {.self_primary = true, .peer_primary = true},
                    {SyncKind::split_brain, 90});
    expect_decision(p.a, p.b, {}, {SyncKind::split_brain, 90});
}

// Rule 100: the divergence is older than both bitmaps.
TEST(Decide, SplitBrainAfterRepeatedLossesIsStillSplitBrain) {
    Pair p = Pair::connected_in_sync();
    p.alone(p.a);  // A writes alone since G
    p.alone(p.b);  // B too
    p.alone(p.a);  // A loses another peer connection attempt and mints again
    expect_decision(p.a, p.b, {}, {SyncKind::split_brain, 100});
}

// Rules 30 and 20.
TEST(Decide, FreshEmptyPeerGetsAFullSync) {
    NodeMeta a = NodeMeta::initial_source(id(1));
    NodeMeta b = NodeMeta::just_created();
    expect_decision(a, b, {.self_primary = true}, {SyncKind::self_is_source_full, 30});
    expect_decision(b, a, {.peer_primary = true}, {SyncKind::self_is_target_full, 20});
}

// Rule 20 after an interrupted full sync: it resumes, never split brain.
TEST(Decide, InterruptedFullSyncResumesAsFullSync) {
    Pair p = Pair::connected_in_sync();
    p.alone(p.a);
    p.alone(p.b);  // split brain; the operator discards B, which stops running the VM
    p.b.demote_cleanly();
    p.b.start_full_sync_target();
    p.b.advance_resync(64 << 20);
    expect_decision(p.a, p.b, {.self_primary = true}, {SyncKind::self_is_source_full, 30});
    EXPECT_EQ(p.b.resync_cursor, 64u << 20);
}

// Rule 10.
TEST(Decide, TwoNewCopiesNeedTheOperator) {
    expect_decision(NodeMeta::just_created(), NodeMeta::just_created(), {},
                    {SyncKind::no_usable_source, 1});
    NodeMeta a = NodeMeta::just_created();
    NodeMeta b = NodeMeta::just_created();
    a.data_state = DataState::Outdated;  // not both Inconsistent: rule 10 itself
    expect_decision(a, b, {}, {SyncKind::no_usable_source, 10});
}

// Rule 80 (and 60 from the other side): the peer is behind more than the dirty map reaches.
TEST(Decide, PeerBehindBeyondTheBitmapGetsAFullSync) {
    Pair p = Pair::connected_in_sync();
    p.alone(p.a);                  // B away; A writes alone since G
    p.b.start_bitmap_sync_target();  // B returns, resync starts, then the link drops again
    p.alone(p.a);                  // A writes alone again: G is now only in A's history
    expect_decision(p.a, p.b, {.self_primary = true}, {SyncKind::self_is_source_full, 80});
    expect_decision(p.b, p.a, {.peer_primary = true}, {SyncKind::self_is_target_full, 60});
}

// Rule 42: same generation, the primary crashed while connected.
TEST(Decide, CrashedPrimaryOnTheSameGenerationIsBitmapSourceOfItsAL) {
    Pair p = Pair::connected_in_sync();
    p.a.promote();
    Pair::crash_and_restart(p.a);
    // Neither is primary now: the node that crashed as primary is the source.
    expect_decision(p.a, p.b, {}, {SyncKind::self_is_source_bitmap, 42, true, false});
    // B was promoted but has not written yet (generations are minted lazily): B is the source
    // and A's activity-log extents are overwritten from B.
    expect_decision(p.a, p.b, {.peer_primary = true},
                    {SyncKind::self_is_target_bitmap, 42, true, false});
}

TEST(Decide, BothCrashedOnTheSameGenerationUsesTheTieBreaker) {
    Pair p = Pair::connected_in_sync();
    p.a.crashed_primary = true;
    p.b.crashed_primary = true;
    expect_decision(p.a, p.b, {.self_wins_ties = true},
                    {SyncKind::self_is_source_bitmap, 42, true, true});
    expect_decision(p.a, p.b, {.self_wins_ties = false},
                    {SyncKind::self_is_target_bitmap, 42, true, true});
}

// Rule 40: same generation, one copy is an unfinished resync target.
TEST(Decide, InterruptedResyncOnTheSameGenerationResumes) {
    Pair p = Pair::connected_in_sync();
    p.b.start_bitmap_sync_target();  // e.g. verify found differences and B is being repaired
    expect_decision(p.a, p.b, {}, {SyncKind::self_is_source_bitmap, 40});
}

// Rule 1.
TEST(Decide, TwoInconsistentCopiesHaveNoSource) {
    Pair p = Pair::connected_in_sync();
    p.a.start_bitmap_sync_target();
    p.b.start_bitmap_sync_target();
    expect_decision(p.a, p.b, {}, {SyncKind::no_usable_source, 1});
}

// Rule 2: the generations pick a source that cannot be one.
TEST(Decide, InconsistentSourceIsRefused) {
    Pair p = Pair::connected_in_sync();
    p.b.start_bitmap_sync_target();    // B mid-resync...
    NodeMeta replaced = NodeMeta::just_created();  // ...and A's disk was replaced
    replaced.data_state = DataState::Outdated;
    expect_decision(replaced, p.b, {}, {SyncKind::no_usable_source, 2});
}

TEST(Decide, OutdatedSourceNeverOverwritesUpToDate) {
    Pair p = Pair::connected_in_sync();
    p.alone(p.b);
    p.b.mark_outdated();  // contradictory, e.g. an operator marked B outdated by hand
    SyncDecision d = decide(p.b, p.a, {});
    EXPECT_EQ(d.kind, SyncKind::no_usable_source);
    EXPECT_EQ(d.rule, 2);
    EXPECT_NE(d.reason.find("Outdated"), std::string::npos) << d.reason;
    expect_decision(p.b, p.a, {}, {SyncKind::no_usable_source, 2});
}

// Rule 110.
TEST(Decide, UnrelatedCopiesAreRefused) {
    NodeMeta a = NodeMeta::initial_source(id(1));
    NodeMeta b = NodeMeta::initial_source(id(2));
    expect_decision(a, b, {}, {SyncKind::unrelated, 110});
    SyncDecision d = decide(a, b, {});
    EXPECT_NE(d.reason.find(format_generation(id(1))), std::string::npos) << d.reason;
    EXPECT_NE(d.reason.find(format_generation(id(2))), std::string::npos) << d.reason;
}

// Every row of the table is reached by at least one scenario above; this walks them once more
// and checks that nothing is missing.
TEST(Decide, EveryRowOfTheTableIsReachable) {
    std::set<int> rules;
    auto note = [&](const NodeMeta& s, const NodeMeta& q, Roles r) {
        rules.insert(decide(s, q, r).rule);
        rules.insert(decide(q, s, r.mirrored()).rule);
    };
    {
        Pair p = Pair::connected_in_sync();
        note(p.a, p.b, {});  // 41
        p.alone(p.a);
        note(p.a, p.b, {});  // 70, 50
        p.b.start_bitmap_sync_target();
        p.alone(p.a);
        note(p.a, p.b, {});  // 80, 60
    }
    {
        Pair p = Pair::connected_in_sync();
        p.alone(p.a);
        p.alone(p.b);
        note(p.a, p.b, {});  // 90
        p.alone(p.a);
        note(p.a, p.b, {});  // 100
    }
    {
        Pair p = Pair::connected_in_sync();
        p.a.crashed_primary = true;
        note(p.a, p.b, {});  // 42
        p.b.start_bitmap_sync_target();
        note(p.a, p.b, {});  // 40
        p.a.start_bitmap_sync_target();
        note(p.a, p.b, {});  // 1
    }
    NodeMeta fresh = NodeMeta::just_created();
    note(NodeMeta::initial_source(id(1)), fresh, {});  // 30, 20
    NodeMeta outdated_fresh = fresh;
    outdated_fresh.data_state = DataState::Outdated;
    note(outdated_fresh, fresh, {});  // 10
    note(NodeMeta::initial_source(id(1)), NodeMeta::initial_source(id(2)), {});  // 110
    NodeMeta inconsistent = NodeMeta::initial_source(id(1));
    inconsistent.data_state = DataState::Inconsistent;
    note(inconsistent, outdated_fresh, {});  // 2
    EXPECT_EQ(rules, (std::set<int>{1, 2, 10, 20, 30, 40, 41, 42, 50, 60, 70, 80, 90, 100, 110}));
}

// decide() is symmetric over many arbitrary pairs, not only the scenarios.
TEST(Decide, IsSymmetric) {
    const std::uint64_t pool[] = {kNoGeneration, kJustCreated, id(1), id(2), id(3), id(4)};
    const DataState states[] = {DataState::UpToDate, DataState::Inconsistent, DataState::Outdated};
    std::uint64_t seed = 12345;
    auto next = [&](std::size_t n) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        return static_cast<std::size_t>((seed >> 33) % n);
    };
    auto random_meta = [&] {
        NodeMeta m;
        m.gen.current = pool[1 + next(5)];
        m.gen.bitmap = pool[next(6)];
        for (auto& h : m.gen.history) h = pool[next(6)];
        m.data_state = states[next(3)];
        m.crashed_primary = next(4) == 0;
        return m;
    };
    for (int i = 0; i < 20000; ++i) {
        NodeMeta s = random_meta();
        NodeMeta q = random_meta();
        Roles r{next(2) == 0, next(2) == 0, next(2) == 0};
        SyncDecision d = decide(s, q, r);
        SyncDecision m = decide(q, s, r.mirrored());
        ASSERT_EQ(to_string(m.kind), to_string(mirror(d.kind))) << d.reason << " / " << m.reason;
        ASSERT_EQ(d.self_activity_log_joins, m.peer_activity_log_joins);
    }
}

}  // namespace
}  // namespace imagesync::meta
