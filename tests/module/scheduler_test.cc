// The scheduler on a virtual clock: cron failback times across DST changes, who acts and who
// skips (with the reason), missed jobs, restarts from the saved plan, one-off swaps merged
// between the two nodes, and a two-node run where a job never runs on both nodes.
#include <map>
#include <random>

#include <gtest/gtest.h>

#include <vmha/module/scheduler.h>

using namespace vmha;
using namespace vmha::module;
using std::chrono::seconds;

namespace {

SysSeconds utc(int y, int mo, int d, int h, int mi, int s = 0) {
    return SysSeconds{config::CivilTime{y, mo, d, h, mi, s}.local().time_since_epoch()};
}

config::TimeZone zone(const char* name) {
    auto z = config::TimeZone::load(name);
    EXPECT_TRUE(z) << name;
    return z ? *z : config::TimeZone::utc();
}

config::CronSchedule cron(const char* text) {
    auto c = config::CronSchedule::parse(text);
    EXPECT_TRUE(c) << text;
    return *c;
}

// Which node runs the VM, shared by the nodes of one test.
struct World {
    std::string runs = "hv2";
};

struct FakePort final : SchedulePort {
    FakePort(std::string self_, std::string peer_, World& w) : self(std::move(self_)), peer(std::move(peer_)), world(w) {}
    std::string self, peer;
    World& world;
    Status refusal;
    bool complete_at_once = true;
    Done pending;
    int swaps = 0;
    int changes = 0;
    std::vector<ScheduleEvent> events;

    bool runs_vm() const override { return world.runs == self; }
    bool peer_runs_vm() const override { return world.runs == peer; }
    Status swap_refusal() const override { return refusal; }
    void swap(Done done) override {
        ++swaps;
        EXPECT_EQ(world.runs, self) << "a swap on a node that does not run the VM";
        if (complete_at_once) {
            world.runs = peer;
            done({});
        } else {
            pending = std::move(done);
        }
    }
    void record(const ScheduleEvent& e) override { events.push_back(e); }
    void changed() override { ++changes; }

    std::vector<std::string> settled() const {  // "outcome: reason" of every final event
        std::vector<std::string> out;
        for (const auto& e : events) {
            if (e.outcome != JobOutcome::pending) out.push_back(std::string(to_string(e.outcome)) + ": " + e.reason);
        }
        return out;
    }
};

struct MemStore final : ScheduleStore {
    std::optional<nlohmann::json> saved;
    int saves = 0;
    Result<std::optional<nlohmann::json>> load() override { return saved; }
    Status save(const nlohmann::json& plan) override {
        saved = plan;
        ++saves;
        return {};
    }
};

SchedulerConfig failback_config(const char* self, const char* schedule, const char* tz = "Europe/Paris") {
    SchedulerConfig c;
    c.module = "web1";
    c.self = self;
    c.peer = std::string(self) == "hv1" ? "hv2" : "hv1";
    c.preferred = "hv1";
    c.failback = cron(schedule);
    c.zone = zone(tz);
    return c;
}

// No scheduled failback: one-off swaps only, times in Europe/Paris.
SchedulerConfig plain_config(const char* self) {
    SchedulerConfig c;
    c.module = "web1";
    c.self = self;
    c.peer = std::string(self) == "hv1" ? "hv2" : "hv1";
    c.zone = zone("Europe/Paris");
    return c;
}

std::vector<std::string> fires(const Scheduler& s, const config::TimeZone& z, SysSeconds from, int n) {
    std::vector<std::string> out;
    for (auto t : s.next_failbacks(from, n)) out.push_back(z.format(t));
    return out;
}

// Ticks every second from `from` to `to` (inclusive).
void run(Scheduler& s, SysSeconds from, SysSeconds to) {
    for (auto t = from; t <= to; t += seconds(1)) s.tick(t);
}

}  // namespace

TEST(Scheduler, CronTimesAcrossDstChanges) {
    World w;
    FakePort port("hv2", "hv1", w);
    MemStore store;
    const auto paris = zone("Europe/Paris");
    Scheduler daily(failback_config("hv2", "30 2 * * *"), port, store);
    // Spring forward (2026-03-29): 02:30 does not exist; it fires once, at the jump (03:00 CEST).
    EXPECT_EQ(fires(daily, paris, utc(2026, 3, 27, 12, 0), 4),
              (std::vector<std::string>{"2026-03-28 02:30 CET", "2026-03-29 03:00 CEST",
                                        "2026-03-30 02:30 CEST", "2026-03-31 02:30 CEST"}));
    // Fall back (2026-10-25): 02:30 happens twice; it fires once, at the first.
    EXPECT_EQ(fires(daily, paris, utc(2026, 10, 24, 12, 0), 3),
              (std::vector<std::string>{"2026-10-25 02:30 CEST", "2026-10-26 02:30 CET",
                                        "2026-10-27 02:30 CET"}));
    // Several times inside the gap still fire once.
    Scheduler many(failback_config("hv2", "0,15,30,45 2 29 3 *"), port, store);
    EXPECT_EQ(fires(many, paris, utc(2026, 3, 28, 12, 0), 2),
              (std::vector<std::string>{"2026-03-29 03:00 CEST", "2027-03-29 02:00 CEST"}));
    // Ranges, steps, names and the day-of-month-or-weekday rule, in New York's DST week.
    const auto ny = zone("America/New_York");
    Scheduler weekly(failback_config("hv2", "0 1-3/2 * mar sun", "America/New_York"), port, store);
    EXPECT_EQ(fires(weekly, ny, utc(2027, 3, 13, 0, 0), 3),
              (std::vector<std::string>{"2027-03-14 01:00 EST", "2027-03-14 03:00 EDT",
                                        "2027-03-21 01:00 EDT"}));
    Scheduler either(failback_config("hv2", "0 4 13 * fri", "UTC"), port, store);
    EXPECT_EQ(fires(either, config::TimeZone::utc(), utc(2026, 11, 10, 0, 0), 3),
              (std::vector<std::string>{"2026-11-13 04:00 UTC", "2026-11-20 04:00 UTC",
                                        "2026-11-27 04:00 UTC"}));
    // Lord Howe's 30-minute fall-back: 01:45 only at its first occurrence.
    const auto lh = zone("Australia/Lord_Howe");
    Scheduler lord(failback_config("hv2", "45 1 * * *", "Australia/Lord_Howe"), port, store);
    const auto f = lord.next_failbacks(utc(2027, 4, 2, 0, 0), 3);
    ASSERT_EQ(f.size(), 3u);
    EXPECT_EQ(f[1] - f[0], seconds(86400));
    EXPECT_EQ(f[2] - f[1], seconds(86400 + 1800)) << lh.format(f[1]) << " then " << lh.format(f[2]);
}

TEST(Scheduler, FailbackRunsOnceOnTheNodeThatRunsTheVm) {
    World w;  // the VM runs on hv2, the preferred node is hv1
    FakePort port("hv2", "hv1", w);
    MemStore store;
    Scheduler s(failback_config("hv2", "0 2 * * *"), port, store);
    ASSERT_TRUE(s.load(utc(2026, 11, 30, 0, 50)));  // 01:50 CET
    run(s, utc(2026, 11, 30, 0, 50), utc(2026, 11, 30, 0, 59, 59));
    EXPECT_EQ(port.swaps, 0);
    run(s, utc(2026, 11, 30, 1, 0), utc(2026, 11, 30, 1, 10));
    EXPECT_EQ(port.swaps, 1);
    EXPECT_EQ(w.runs, "hv1");
    EXPECT_EQ(port.settled(), (std::vector<std::string>{"done: the VM runs on hv1"}));
    // The next night the VM already runs on the preferred node: nothing to do, said so.
    run(s, utc(2026, 12, 1, 0, 59, 58), utc(2026, 12, 1, 1, 0, 2));
    EXPECT_EQ(port.swaps, 1);
    EXPECT_EQ(port.settled().back(), "not_needed: the VM already runs on the preferred node hv1");
    // The preferred node's own scheduler never acts on failback times.
    World w2;
    w2.runs = "hv1";
    FakePort pref("hv1", "hv2", w2);
    MemStore store2;
    Scheduler p(failback_config("hv1", "0 2 * * *"), pref, store2);
    ASSERT_TRUE(p.load(utc(2026, 11, 30, 0, 59)));
    run(p, utc(2026, 11, 30, 0, 59), utc(2026, 11, 30, 1, 1));
    EXPECT_EQ(pref.swaps, 0);
    EXPECT_TRUE(pref.events.empty());
}

TEST(Scheduler, UnsafeFailbackIsSkippedWithItsReason) {
    World w;
    FakePort port("hv2", "hv1", w);
    port.refusal = Error(errc::busy, "module \"web1\": hv1 cannot take the VM over now: its copy is Outdated, not UpToDate");
    MemStore store;
    Scheduler s(failback_config("hv2", "0 2 * * *"), port, store);
    ASSERT_TRUE(s.load(utc(2026, 11, 30, 0, 59)));
    run(s, utc(2026, 11, 30, 0, 59), utc(2026, 11, 30, 1, 5));
    EXPECT_EQ(port.swaps, 0);
    EXPECT_EQ(port.settled(), (std::vector<std::string>{
                                  "skipped: module \"web1\": hv1 cannot take the VM over now: its copy is "
                                  "Outdated, not UpToDate"}));
    // Skipped is final for that time: it is not retried a minute later when the peer is ready.
    port.refusal = {};
    run(s, utc(2026, 11, 30, 1, 5), utc(2026, 11, 30, 1, 30));
    EXPECT_EQ(port.swaps, 0);
    // The module stopped on both nodes.
    w.runs = "";
    run(s, utc(2026, 12, 1, 0, 59, 59), utc(2026, 12, 1, 1, 0, 1));
    EXPECT_EQ(port.settled().back(), "skipped: the VM runs on neither node (the module is stopped or waiting)");
    ASSERT_EQ(s.history().size(), 2u);
    EXPECT_EQ(s.history().back().due, utc(2026, 12, 1, 1, 0));
}

TEST(Scheduler, MissedWhileDownAndLateWithinTheLimit) {
    World w;
    FakePort port("hv2", "hv1", w);
    MemStore store;
    {
        Scheduler s(failback_config("hv2", "0 2 * * *"), port, store);
        ASSERT_TRUE(s.load(utc(2026, 11, 29, 12, 0)));
        s.tick(utc(2026, 11, 29, 12, 0));
        run(s, utc(2026, 11, 30, 0, 59, 58), utc(2026, 11, 30, 0, 59, 59));
    }
    // vmhad was down from 01:59:59 CET to 02:03 CET: the job runs 3 minutes late.
    {
        Scheduler s(failback_config("hv2", "0 2 * * *"), port, store);
        ASSERT_TRUE(s.load(utc(2026, 11, 30, 1, 3)));
        s.tick(utc(2026, 11, 30, 1, 3));
        EXPECT_EQ(port.swaps, 1);
    }
    // Down for three days across three times: the last was long ago; all are recorded as
    // missed, none is run.
    w.runs = "hv2";
    {
        Scheduler s(failback_config("hv2", "0 2 * * *"), port, store);
        ASSERT_TRUE(s.load(utc(2026, 12, 3, 12, 0)));
        s.tick(utc(2026, 12, 3, 12, 0));
        EXPECT_EQ(port.swaps, 1);
        const auto got = port.settled();
        ASSERT_GE(got.size(), 3u);
        EXPECT_EQ(got[got.size() - 2], "skipped: 2 earlier time(s) missed while vmhad was not running");
        EXPECT_EQ(got.back(), "skipped: missed: due at 2026-12-03 02:00 CET, 11h ago (vmhad was not "
                              "running); the next is at 2026-12-04 02:00 CET");
    }
    // And a restart right after a handled time does not run it again.
    w.runs = "hv2";
    const int before = port.swaps;
    {
        Scheduler s(failback_config("hv2", "0 2 * * *"), port, store);
        ASSERT_TRUE(s.load(utc(2026, 12, 4, 1, 0, 30)));
        run(s, utc(2026, 12, 4, 1, 0, 30), utc(2026, 12, 4, 1, 0, 40));  // runs once
    }
    {
        Scheduler s(failback_config("hv2", "0 2 * * *"), port, store);
        w.runs = "hv2";  // moved back meanwhile; the same time must not fire again
        ASSERT_TRUE(s.load(utc(2026, 12, 4, 1, 1)));
        run(s, utc(2026, 12, 4, 1, 1), utc(2026, 12, 4, 1, 4));
    }
    EXPECT_EQ(port.swaps, before + 1);
}

TEST(Scheduler, WallClockGoingBackDoesNotFireTwice) {
    World w;
    FakePort port("hv2", "hv1", w);
    port.complete_at_once = true;
    MemStore store;
    Scheduler s(failback_config("hv2", "0 2 * * *", "UTC"), port, store);
    ASSERT_TRUE(s.load(utc(2026, 11, 30, 1, 59)));
    run(s, utc(2026, 11, 30, 1, 59), utc(2026, 11, 30, 2, 0, 5));
    EXPECT_EQ(port.swaps, 1);
    w.runs = "hv2";
    run(s, utc(2026, 11, 30, 1, 59, 50), utc(2026, 11, 30, 2, 0, 10));  // NTP stepped back 15 s
    EXPECT_EQ(port.swaps, 1);
}

TEST(Scheduler, OneOffSwapRunsWhereTheVmRunsAndIsKeptAcrossRestarts) {
    World w;  // the VM runs on hv2
    FakePort port("hv2", "hv1", w);
    MemStore store;
    const SchedulerConfig c = plain_config("hv2");
    {
        Scheduler s(c, port, store);
        ASSERT_TRUE(s.load(utc(2026, 11, 30, 12, 0)));
        auto at = s.parse_when("2026-12-01 02:00", utc(2026, 11, 30, 12, 0));
        ASSERT_TRUE(at);
        EXPECT_EQ(*at, utc(2026, 12, 1, 1, 0));
        ASSERT_TRUE(s.add_swap("a1", *at, "hv1", "root", utc(2026, 11, 30, 12, 0)));
        EXPECT_EQ(port.changes, 1);
        auto dup = s.add_swap("a2", *at, "hv1", "root", utc(2026, 11, 30, 12, 0));
        ASSERT_FALSE(dup);
        EXPECT_EQ(dup.error().message, "swap a1 is already scheduled at 2026-12-01 02:00 CET (to hv1); cancel "
                                       "it first with `vmha schedule cancel web1 a1`");
        ASSERT_TRUE(s.add_swap("a3", utc(2026, 12, 2, 1, 0), "hv1", "root", utc(2026, 11, 30, 12, 0)));
    }
    // vmhad restarts: both entries are still there.
    Scheduler s(c, port, store);
    ASSERT_TRUE(s.load(utc(2026, 12, 1, 0, 59)));
    ASSERT_EQ(s.swaps().size(), 2u);
    port.complete_at_once = false;
    run(s, utc(2026, 12, 1, 0, 59), utc(2026, 12, 1, 1, 0, 30));
    EXPECT_EQ(port.swaps, 1);  // one call, though ticks went on while it ran
    EXPECT_EQ(s.swaps()[0].outcome, JobOutcome::pending);
    auto cancel_running = s.cancel("a1", "root", utc(2026, 12, 1, 1, 0, 31));
    EXPECT_TRUE(!cancel_running && cancel_running.error().is(errc::busy));
    w.runs = "hv1";
    port.pending({});
    EXPECT_EQ(s.swaps()[0].outcome, JobOutcome::done);
    EXPECT_EQ(s.swaps()[0].settled_by, "hv2");
    // The second one is due while the VM runs on hv1 (the target is hv1): skipped there, and
    // this node, which does not run the VM, says the same.
    run(s, utc(2026, 12, 2, 0, 59, 59), utc(2026, 12, 2, 1, 0, 1));
    EXPECT_EQ(s.swaps()[1].outcome, JobOutcome::skipped);
    EXPECT_EQ(s.swaps()[1].reason, "the VM already runs on hv1");
    EXPECT_EQ(port.swaps, 1);
    // Cancelling a settled swap says what happened to it.
    EXPECT_EQ(s.cancel("a1", "root", utc(2026, 12, 3, 0, 0)).error().message,
              "swap a1 is done already (the VM runs on hv1, settled by hv2)");
    EXPECT_TRUE(s.cancel("zz", "root", utc(2026, 12, 3, 0, 0)).error().is(errc::not_found));
}

TEST(Scheduler, WhenTheOperatorSaysIt) {
    World w;
    FakePort port("hv2", "hv1", w);
    MemStore store;
    const SchedulerConfig c = plain_config("hv2");
    Scheduler s(c, port, store);
    const auto now = utc(2026, 11, 30, 12, 0);
    EXPECT_EQ(*s.parse_when("+90s", now), now + seconds(90));
    EXPECT_EQ(*s.parse_when("+2h", now), now + seconds(7200));
    EXPECT_EQ(*s.parse_when("2026-12-01 02:00:30", now), utc(2026, 12, 1, 1, 0, 30));
    EXPECT_EQ(*s.parse_when("2026-12-01T02:00Z", now), utc(2026, 12, 1, 2, 0));
    EXPECT_EQ(*s.parse_when("2026-12-01 02:00-05:00", now), utc(2026, 12, 1, 7, 0));
    EXPECT_EQ(s.parse_when("2027-03-28 02:30", now).error().message,
              "2027-03-28 02:30 does not exist in Europe/Paris: the clocks jump over it (to 2027-03-28 "
              "03:00 CEST); give a time outside the jump");
    EXPECT_EQ(s.parse_when("2027-10-31 02:30", now).error().message,
              "2027-10-31 02:30 happens twice in Europe/Paris (the clocks go back); say which: "
              "\"2027-10-31 02:30+02:00\" or \"2027-10-31 02:30+01:00\"");
    EXPECT_EQ(*s.parse_when("2027-10-31 02:30+01:00", now), utc(2027, 10, 31, 1, 30));
    EXPECT_EQ(s.parse_when("2026-11-30 12:59", now).error().message,
              "2026-11-30 12:59 CET is not in the future (it is now 2026-11-30 13:00 CET)");
    for (const char* bad : {"", "tomorrow", "+", "+5 parsecs", "2026-12-01", "2026-12-01 02:00+5",
                            "2026-12-01 02:00+25:00", "2126-01-01 00:00"}) {
        EXPECT_FALSE(s.parse_when(bad, now)) << bad;
    }
}

TEST(Scheduler, PeersMergeSwapsAndOutcomesOnlyMoveForward) {
    World w;
    FakePort p1("hv1", "hv2", w);
    FakePort p2("hv2", "hv1", w);
    MemStore st1, st2;
    Scheduler a(plain_config("hv1"), p1, st1), b(plain_config("hv2"), p2, st2);
    const auto now = utc(2026, 11, 30, 12, 0);
    ASSERT_TRUE(a.load(now));
    ASSERT_TRUE(b.load(now));
    ASSERT_TRUE(a.add_swap("x1", now + seconds(3600), "hv1", "root", now));
    ASSERT_TRUE(a.add_swap("x2", now + seconds(7200), "hv1", "root", now));
    EXPECT_EQ(*b.merge(a.sync_message(), now), 2);
    EXPECT_EQ(*b.merge(a.sync_message(), now), 0);  // idempotent
    // A partition: hv1 cancels x1, while hv2, which runs the VM, carries it out.
    ASSERT_TRUE(a.cancel("x1", "root", now + seconds(60)));
    run(b, now + seconds(3599), now + seconds(3601));
    EXPECT_EQ(w.runs, "hv1");
    // Whatever the order of the merges, both end with "done" (it happened).
    EXPECT_EQ(*a.merge(b.sync_message(), now + seconds(3700)), 1);
    EXPECT_EQ(*b.merge(a.sync_message(), now + seconds(3700)), 0);
    EXPECT_EQ(a.swaps()[0].outcome, JobOutcome::done);
    EXPECT_EQ(b.swaps()[0].outcome, JobOutcome::done);
    // Malformed entries are refused one by one, the rest is taken.
    nlohmann::json msg = b.sync_message();
    msg["swaps"].push_back({{"id", "BAD ID"}});
    msg["swaps"].push_back({{"id", "x9"}, {"at", 1}, {"to", "hv7"}, {"by", ""}, {"created", 1},
                            {"outcome", "pending"}, {"reason", ""}, {"settled_by", ""}, {"settled", 0}});
    auto r = a.merge(msg, now + seconds(3700));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message, "2 malformed swap entries from hv2 ignored (0 taken)");
    EXPECT_FALSE(a.merge(nlohmann::json::array(), now));
    EXPECT_FALSE(a.merge({{"swaps", "no"}}, now));
}

TEST(Scheduler, NeverRunsOnBothNodes) {
    // Two nodes tick the same plan through a week around a DST change, with one-off swaps
    // added at random on either node and merged after random delays; swaps sometimes refused.
    // Every swap must be made by the node that runs the VM, one at a time.
    for (std::uint64_t seed = 1; seed <= 4; ++seed) {
        std::mt19937_64 rng(seed);
        World w;
        w.runs = "hv1";
        FakePort p1("hv1", "hv2", w);
        FakePort p2("hv2", "hv1", w);
        MemStore st1, st2;
        auto ca = failback_config("hv1", "*/20 * * * *");
        auto cb = failback_config("hv2", "*/20 * * * *");
        ca.save_mark_every = cb.save_mark_every = std::chrono::hours(6);  // fewer saves: a faster test
        Scheduler a(ca, p1, st1);
        Scheduler b(cb, p2, st2);
        auto t = utc(2026, 10, 23, 0, 0);
        ASSERT_TRUE(a.load(t));
        ASSERT_TRUE(b.load(t));
        int added = 0;
        for (int step = 0; step < 7 * 24 * 60; ++step, t += seconds(60)) {
            if (step < 7 * 24 * 60 - 120 && rng() % 50 == 0) {
                Scheduler& who = rng() % 2 ? a : b;
                const std::string to = w.runs == "hv1" ? "hv2" : "hv1";
                (void)who.add_swap("r" + std::to_string(added++), t + seconds(60 * (1 + rng() % 90)), to, "test", t);
            }
            p1.refusal = rng() % 10 == 0 ? Status(Error(errc::busy, "resync")) : Status{};
            p2.refusal = rng() % 10 == 0 ? Status(Error(errc::busy, "resync")) : Status{};
            a.tick(t);
            b.tick(t);
            if (rng() % 60 == 0) (void)b.merge(a.sync_message(), t);
            if (rng() % 60 == 0) (void)a.merge(b.sync_message(), t);
        }
        (void)b.merge(a.sync_message(), t);
        (void)a.merge(b.sync_message(), t);
        // FakePort::swap checks that only the node running the VM swaps; the plans converge.
        ASSERT_EQ(a.swaps().size(), b.swaps().size()) << seed;
        for (std::size_t i = 0; i < a.swaps().size(); ++i) {
            EXPECT_EQ(a.swaps()[i].outcome, b.swaps()[i].outcome) << seed << " " << a.swaps()[i].id;
            EXPECT_NE(a.swaps()[i].outcome, JobOutcome::pending) << seed << " " << a.swaps()[i].id;
        }
        EXPECT_GT(p2.swaps, 0) << seed;  // failback from hv2 happened at least once
        EXPECT_GT(added, 50) << seed;
    }
}
