// ModuleRunner against scripted ports: each kind of cell of the transition table (runner.h)
// makes exactly the port calls it names, in order. Completions are queued and delivered by the
// test (never inline), as the real ports do.
#include <algorithm>
#include <deque>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <vmha/module/runner.h>

namespace vmha::module {
namespace {

class Loop {
public:
    void post(std::function<void()> fn) { queue_.push_back(std::move(fn)); }
    // Runs everything queued, including what that queues, until nothing is left.
    void drain() {
        for (int i = 0; i < 10000 && !queue_.empty(); ++i) {
            auto fn = std::move(queue_.front());
            queue_.pop_front();
            fn();
        }
    }

private:
    std::deque<std::function<void()>> queue_;
};

// Timers fire only when the test calls tick(): every pending one once, in order.
struct FakeClock final : Clock {
    TimePoint t = TimePoint{} + std::chrono::hours(1);
    struct Pending {
        std::weak_ptr<bool> live;
        std::function<void()> fn;
    };
    std::vector<Pending> pending;
    struct T final : Token {
        std::shared_ptr<bool> live = std::make_shared<bool>(true);
    };
    TimePoint now() const override { return t; }
    std::unique_ptr<Token> after(Duration, std::function<void()> fn) override {
        auto token = std::make_unique<T>();
        pending.push_back({token->live, std::move(fn)});
        return token;
    }
    void tick(Duration step = Duration(1000)) {
        t += step;
        auto due = std::move(pending);
        pending.clear();
        for (auto& p : due) {
            if (!p.live.expired()) p.fn();
        }
    }
};

struct World final : ImagesyncPort, VmPort, PeerPort, Store, Observer {
    Loop& loop;
    explicit World(Loop& l) : loop(l) {}

    std::vector<std::string> calls;
    ImagesyncStatus is;
    bool vm_running = false;
    Persisted persisted;
    std::vector<nlohmann::json> sent;
    std::vector<std::string> transitions;

    void call(const std::string& what, Done done, Status result = {}) {
        calls.push_back(what);
        loop.post([done, result] { done(result); });
    }
    // ImagesyncPort
    void ensure_running(Done d) override {
        is.up = true;
        call("imagesync.ensure_running", d);
    }
    void stop(Done d) override {
        is = {};
        call("imagesync.stop", d);
    }
    void status(std::function<void(ImagesyncStatus)> done) override {
        auto s = is;
        loop.post([done, s] { done(s); });
    }
    void promote(Done d) override {
        is.primary = true;
        call("imagesync.promote", d);
    }
    void demote(Done d) override {
        is.primary = false;
        call("imagesync.demote", d);
    }
    void connect(Done d) override { call("imagesync.connect", d); }
    void outdate(Done d) override { call("imagesync.outdate", d); }
    void declare_initial_data(Done d) override { call("imagesync.declare_initial_data", d); }
    void resume_io(Done d) override { call("imagesync.resume_io", d); }
    void promote_forced(Done d) override {
        is.primary = true;
        is.data = DataState::up_to_date;
        call("imagesync.promote_forced", d);
    }
    // VmPort
    void start(Done d) override {
        vm_running = true;
        call("vm.start", d);
    }
    void stop_vm(Done d) {
        vm_running = false;
        call("vm.stop", d);
    }
    void power_off(Done d) override {
        vm_running = false;
        call("vm.power_off", d);
    }
    void resume(Done d) override { call("vm.resume", d); }
    void health(std::function<void(VmHealth, std::string)> done) override {
        const bool r = vm_running;
        loop.post([done, r] { done(r ? VmHealth::running : VmHealth::stopped, r ? "running" : "shut off"); });
    }
    // PeerPort
    void send(const nlohmann::json& m) override { sent.push_back(m); }
    // Store
    Persisted load() override { return persisted; }
    Status save(const Persisted& p) override {
        persisted = p;
        return {};
    }
    // Observer
    void transition(State from, State to, int rule, const std::string&) override {
        transitions.push_back(std::string(to_string(from)) + "->" + std::string(to_string(to)) + " " +
                              std::to_string(rule));
    }
    void note(const std::string&) override {}
};

// VmPort::stop and ImagesyncPort::stop share a signature: the VM port is a separate object.
struct VmAdapter final : VmPort {
    World& w;
    explicit VmAdapter(World& world) : w(world) {}
    void start(Done d) override { w.start(std::move(d)); }
    void stop(Done d) override { w.stop_vm(std::move(d)); }
    void power_off(Done d) override { w.power_off(std::move(d)); }
    void resume(Done d) override { w.resume(std::move(d)); }
    void health(std::function<void(VmHealth, std::string)> done) override { w.health(std::move(done)); }
};

class RunnerTest : public ::testing::Test {
protected:
    // hv1, preferred, of the pair hv1/hv2, two restarts.
    static RunnerConfig base_config() {
        RunnerConfig c;
        c.module = "web1";
        c.self = "hv1";
        c.peer = "hv2";
        c.preferred = true;
        c.restart_attempts = 2;
        return c;
    }
    RunnerTest() {
        const RunnerConfig c = base_config();
        world.persisted.started = true;
        world.is.up = true;
        world.is.data = DataState::up_to_date;
        world.is.link = Link::connected;
        world.is.generations.current = 0x1000;
        runner = std::make_unique<ModuleRunner>(c, clock, world, vm, world, world, world);
    }

    nlohmann::json report(const std::string& state, std::uint64_t grant = 0) {
        nlohmann::json r = {{"type", "report"},   {"state", state}, {"data", "UpToDate"}, {"fit", true},
                            {"claim", nullptr},   {"grant", nullptr}, {"handing_over", false},
                            {"generations", {{"current", 0x1000}, {"bitmap", 0}, {"history", {0, 0, 0, 0}}}}};
        if (grant != 0) r["grant"] = grant;
        return r;
    }
    std::uint64_t last_claim() {
        for (auto it = world.sent.rbegin(); it != world.sent.rend(); ++it) {
            if ((*it)["claim"].is_number_unsigned()) return (*it)["claim"].get<std::uint64_t>();
        }
        return 0;
    }
    // Started, the peer alive on the channel, reporting `peer_state`.
    void start_with_peer(const char* peer_state) {
        runner->start();
        loop.drain();
        runner->on_peer_liveness(Liveness::alive);
        runner->on_peer_channel(true);
        runner->on_peer_message(report(peer_state));
        loop.drain();
    }
    // STOP -> WAIT -> PRIM: started, the peer alive and SECOND, this node preferred; claims and
    // runs the VM once the peer grants.
    void bring_to_prim() {
        start_with_peer("SECOND");
        const std::uint64_t claim = last_claim();
        ASSERT_NE(claim, 0u) << "no claim sent: " << to_string(runner->state()) << ": " << runner->reason();
        ASSERT_EQ(runner->state(), State::wait);
        world.calls.clear();
        runner->on_peer_message(report("SECOND", claim));
        loop.drain();
        ASSERT_EQ(runner->state(), State::prim) << runner->reason();
    }

    // STOP -> WAIT -> SECOND: started, the peer alive and running the VM (PRIM).
    void bring_to_second() {
        start_with_peer("PRIM");
        ASSERT_EQ(runner->state(), State::second) << runner->reason();
    }

    Loop loop;
    FakeClock clock;
    World world{loop};
    VmAdapter vm{world};
    std::unique_ptr<ModuleRunner> runner;
};

using Calls = std::vector<std::string>;

TEST_F(RunnerTest, StopToWaitRunsImagesyncAndConnects) {
    world.persisted.started = false;
    world.is = {};
    runner->start();
    loop.drain();
    EXPECT_EQ(runner->state(), State::stop);
    ASSERT_TRUE(runner->op_start());
    loop.drain();
    EXPECT_EQ(runner->state(), State::wait);
    EXPECT_EQ(world.calls, (Calls{"imagesync.ensure_running", "imagesync.connect"}));
}

TEST_F(RunnerTest, IdleToRunningPromotesThenStartsTheVmOnlyWithTheGrant) {
    bring_to_prim();
    EXPECT_EQ(world.calls, (Calls{"imagesync.promote", "vm.start"}));
    EXPECT_EQ(world.persisted.last_state, State::prim);
    EXPECT_TRUE(world.vm_running);
}

TEST_F(RunnerTest, RunningToSecondBySwapStopsDemotesAndHandsOver) {
    bring_to_prim();
    world.calls.clear();
    Status swapped = Error(errc::internal, "not called");
    runner->op_swap([&](Status st) { swapped = st; });
    loop.drain();
    EXPECT_EQ(runner->state(), State::second);
    EXPECT_EQ(world.calls, (Calls{"vm.stop", "imagesync.demote", "imagesync.connect"}));
    EXPECT_TRUE(swapped) << swapped.error().message;
    EXPECT_TRUE(world.sent.back().value("handing_over", false));
}

TEST_F(RunnerTest, ASwapWhoseHandOverCannotBeProvenFails) {
    bring_to_prim();
    world.is.dirty_bytes = 4096;  // a write only this copy holds: the peer lacks it
    Status swapped;
    runner->op_swap([&](Status st) { swapped = st; });
    loop.drain();
    EXPECT_FALSE(swapped);
    EXPECT_FALSE(world.sent.back().value("handing_over", true));
}

TEST_F(RunnerTest, RunningToWaitWhenUnfitStopsTheVmAndDemotes) {
    bring_to_prim();
    world.calls.clear();
    runner->on_checker("br0", CheckerAction::wait, true, "link down");
    loop.drain();
    EXPECT_EQ(runner->state(), State::wait);
    EXPECT_EQ(world.calls, (Calls{"vm.stop", "imagesync.demote", "imagesync.connect"}));
    EXPECT_FALSE(world.vm_running);
}

TEST_F(RunnerTest, RunningToStopStopsTheVmDemotesRecordsAndStopsImagesync) {
    bring_to_prim();
    world.calls.clear();
    std::optional<Status> stopped;
    runner->op_stop([&](Status st) { stopped = std::move(st); });
    EXPECT_FALSE(stopped) << "answered only once the module is in STOP";
    loop.drain();
    ASSERT_TRUE(stopped);
    EXPECT_TRUE(*stopped);
    EXPECT_EQ(runner->state(), State::stop);
    EXPECT_EQ(world.calls, (Calls{"vm.stop", "imagesync.demote", "imagesync.stop"}));
    EXPECT_FALSE(world.persisted.started);
    EXPECT_EQ(world.persisted.data, DataState::up_to_date) << "the last data state is kept";
    EXPECT_TRUE(world.persisted.final) << "read just before a clean stop: the peer may compare with it";
    clock.tick();
    loop.drain();
    ASSERT_FALSE(world.sent.empty());
    EXPECT_EQ(world.sent.back()["generations"]["current"], 0x1000) << world.sent.back().dump();
}

// Generations recorded while imagesyncd ran may lag behind its metadata (it crashed, or the
// machine did, between two polls): while it is down, the peer is not told them, so it cannot
// take this copy for as new as its own and start the VM alone on that (found by the
// simulation: a peer that went on alone, crashed, and came back reported its older generations).
TEST_F(RunnerTest, GenerationsThatMayLagAreNotReportedWhileImagesyncIsDown) {
    for (bool final : {false, true}) {
        Loop l;
        World w{l};
        VmAdapter v{w};
        w.persisted.started = false;
        w.persisted.data = DataState::up_to_date;
        w.persisted.generations.current = 0x2000;
        w.persisted.final = final;
        ModuleRunner r(base_config(), clock, w, v, w, w, w);
        r.start();
        l.drain();
        r.on_peer_liveness(Liveness::alive);
        r.on_peer_channel(true);
        l.drain();
        ASSERT_FALSE(w.sent.empty());
        const auto& g = w.sent.back()["generations"];
        if (final) {
            EXPECT_EQ(g["current"], 0x2000) << g.dump();
        } else {
            EXPECT_TRUE(g.is_null()) << g.dump();
        }
        EXPECT_EQ(w.sent.back()["data"], "UpToDate");
    }
}

TEST_F(RunnerTest, PrimAndAloneAreLabelsWithoutEffects) {
    bring_to_prim();
    world.calls.clear();
    world.is.link = Link::down;  // the replication link broke; the next status poll says so
    clock.tick();
    loop.drain();
    EXPECT_EQ(runner->state(), State::alone) << runner->reason();
    world.is.link = Link::connected;
    clock.tick();
    loop.drain();
    EXPECT_EQ(runner->state(), State::prim) << runner->reason();
    EXPECT_TRUE(world.calls.empty()) << world.calls.front();
}

TEST_F(RunnerTest, AFailedVmIsRestartedWithinTheBudgetThenTheNodeGivesUp) {
    bring_to_prim();
    // The peer cannot take over (it reports Inconsistent): restarts, then WAIT.
    auto inconsistent = report("SECOND");
    inconsistent["data"] = "Inconsistent";
    runner->on_peer_message(inconsistent);
    loop.drain();
    for (int attempt = 1; attempt <= 2; ++attempt) {
        world.calls.clear();
        world.vm_running = false;
        runner->on_vm_health(VmHealth::stopped, "crashed");
        loop.drain();
        EXPECT_EQ(world.calls, (Calls{"vm.stop", "vm.start"})) << attempt;
        EXPECT_EQ(runner->state(), State::prim);
    }
    world.calls.clear();
    world.vm_running = false;
    runner->on_vm_health(VmHealth::stopped, "crashed");
    loop.drain();
    EXPECT_EQ(runner->state(), State::wait) << runner->reason();
    EXPECT_EQ(world.calls, (Calls{"vm.stop", "imagesync.demote", "imagesync.connect"}));
    EXPECT_FALSE(world.sent.back().value("fit", true)) << "no restart left: unfit";
}

TEST_F(RunnerTest, APausedVmOnAnIoErrorIsResumedNeverRestarted) {
    bring_to_prim();
    world.calls.clear();
    runner->on_vm_health(VmHealth::paused_on_io_error, "paused: ioerror");
    loop.drain();
    EXPECT_EQ(world.calls, (Calls{"vm.resume"}));
    EXPECT_EQ(runner->state(), State::prim);
}

TEST_F(RunnerTest, TheFenceIsReleasedOnlyOnceThePeerIsOutdatedOrLost) {
    bring_to_prim();
    world.is.link = Link::down;
    world.is.fencing = true;
    clock.tick();
    loop.drain();
    world.calls.clear();
    runner->on_peer_message(report("SECOND"));  // still UpToDate there: hold
    clock.tick();
    loop.drain();
    for (const auto& c : world.calls) EXPECT_NE(c, "imagesync.resume_io");
    auto outdated = report("WAIT");
    outdated["data"] = "Outdated";
    runner->on_peer_message(outdated);
    clock.tick();
    loop.drain();
    EXPECT_NE(std::find(world.calls.begin(), world.calls.end(), "imagesync.resume_io"), world.calls.end());
}

TEST_F(RunnerTest, AMalformedPeerReportIsIgnored) {
    bring_to_prim();
    auto bad = report("SECOND");
    bad["fit"] = "yes";
    runner->on_peer_message(bad);
    runner->on_peer_message(nlohmann::json::array());
    loop.drain();
    EXPECT_EQ(runner->state(), State::prim);
}

}  // namespace
}  // namespace vmha::module

namespace vmha::module {
namespace {

// The operator's commands (vmha restart, prim, second, failover).

TEST_F(RunnerTest, RestartStopsAndStartsTheVmWithoutAHandOver) {
    bring_to_prim();
    world.calls.clear();
    Status result = Error(errc::internal, "not called");
    runner->op_restart([&](Status st) { result = st; });
    loop.drain();
    EXPECT_TRUE(result.ok());
    EXPECT_EQ(world.calls, (Calls{"vm.stop", "vm.start"}));
    EXPECT_EQ(runner->state(), State::prim);
    EXPECT_TRUE(world.vm_running);
}

TEST_F(RunnerTest, RestartIsRefusedWhereTheVmDoesNotRun) {
    runner->start();
    loop.drain();
    Status result;
    runner->op_restart([&](Status st) { result = st; });
    ASSERT_FALSE(result.ok());
    EXPECT_TRUE(result.error().is(errc::invalid_argument));
    EXPECT_NE(result.error().message.find("does not run the VM on hv1"), std::string::npos) << result.error().message;
}

TEST_F(RunnerTest, FailoverOffIsPersistedAndReported) {
    bring_to_prim();
    ASSERT_TRUE(runner->op_failover(false).ok());
    EXPECT_FALSE(world.persisted.failover);
    EXPECT_EQ(runner->status_json()["failover"], false);
    EXPECT_EQ(runner->report()["failover"], false);
    ASSERT_TRUE(runner->op_failover(true).ok());
    EXPECT_TRUE(world.persisted.failover);
}

TEST_F(RunnerTest, PrimOnOutdatedDataIsRefusedThenForcedThroughImagesync) {
    world.is.data = DataState::outdated;
    world.is.link = Link::down;
    runner->start();
    loop.drain();
    ASSERT_EQ(runner->state(), State::wait);
    Status plain;
    runner->op_prim(false, [&](Status st) { plain = st; });
    ASSERT_FALSE(plain.ok());
    EXPECT_TRUE(plain.error().is(errc::not_up_to_date));
    EXPECT_NE(plain.error().message.find("--force"), std::string::npos);
    const auto preview = runner->prim_preview();
    EXPECT_EQ(preview["data_state"], "Outdated");
    EXPECT_FALSE(preview["discards"].empty());

    world.calls.clear();
    Status forced = Error(errc::internal, "not called");
    runner->op_prim(true, [&](Status st) { forced = st; });
    loop.drain();
    EXPECT_TRUE(forced.ok());
    ASSERT_FALSE(world.calls.empty());
    EXPECT_EQ(world.calls.front(), "imagesync.promote_forced");
    EXPECT_EQ(runner->state(), State::alone) << runner->reason();
    EXPECT_TRUE(world.vm_running);
}

TEST_F(RunnerTest, PrimForceInASplitBrainKeepsThisCopyThroughImagesyncAndReconnects) {
    world.is.data = DataState::up_to_date;
    world.is.link = Link::split_brain;
    world.is.split_brain = {{"peer_node", "hv2"}, {"local_changed_bytes", 12582912},
                            {"peer_changed_bytes", 4194304}, {"since_generation", "3f2a"}, {"kept_here", false}};
    runner->start();
    loop.drain();
    ASSERT_EQ(runner->state(), State::wait) << runner->reason();
    // vmha status passes imagesync's report through.
    EXPECT_EQ(runner->status_json()["replication"]["split_brain"]["peer_changed_bytes"], 4194304);
    Status plain;
    runner->op_prim(false, [&](Status st) { plain = st; });
    ASSERT_FALSE(plain.ok());
    EXPECT_TRUE(plain.error().is(errc::split_brain));

    world.calls.clear();
    Status forced = Error(errc::internal, "not called");
    runner->op_prim(true, [&](Status st) { forced = st; });
    loop.drain();
    EXPECT_TRUE(forced.ok()) << forced.error().message;
    ASSERT_GE(world.calls.size(), 2u);
    EXPECT_EQ(world.calls[0], "imagesync.promote_forced") << "UpToDate data, but the split needs the choice";
    EXPECT_EQ(world.calls[1], "imagesync.connect");
}

TEST_F(RunnerTest, PrimIsRefusedWhileThePeerRunsTheVm) {
    runner->start();
    loop.drain();
    runner->on_peer_liveness(Liveness::alive);
    runner->on_peer_channel(true);
    runner->on_peer_message(report("PRIM"));
    loop.drain();
    ASSERT_EQ(runner->state(), State::second);
    Status st;
    runner->op_prim(true, [&](Status s) { st = s; });
    ASSERT_FALSE(st.ok());
    EXPECT_TRUE(st.error().is(errc::busy));
    EXPECT_TRUE(runner->op_second().ok());  // `second` on a secondary is fine
}

// ---------------------------------------------------------------------------- with a witness

// The witness as the runner sees it: every acquire answers `answer` (an error, or a state).
struct FakeLease final : LeasePort {
    Loop& loop;
    std::vector<std::string>& calls;
    Result<lease::LeaseState> answer = Error(errc::timeout, "the witness did not answer");
    FakeLease(Loop& l, std::vector<std::string>& c) : loop(l), calls(c) {}
    void acquire(Duration, std::function<void(Result<lease::LeaseState>)> done) override {
        calls.push_back("lease.acquire");
        auto a = answer;
        loop.post([done, a] { done(a); });
    }
    void release(Done done) override {
        calls.push_back("lease.release");
        loop.post([done] { done({}); });
    }
    void held_by(const std::string& node, std::uint64_t epoch = 1, Duration remaining = Duration(10000)) {
        lease::LeaseState st;
        st.holder = node;
        st.remaining = remaining;
        st.ttl = Duration(10000);
        st.epoch = epoch;
        answer = st;
    }
};

class LeaseRunnerTest : public RunnerTest {
protected:
    LeaseRunnerTest() {
        RunnerConfig c = base_config();
        c.lease = RunnerConfig::Lease{Duration(10000), {}};
        runner = std::make_unique<ModuleRunner>(c, clock, world, vm, world, world, world, &lease);
    }
    std::size_t index_of(const std::string& call) {
        return static_cast<std::size_t>(std::find(world.calls.begin(), world.calls.end(), call) - world.calls.begin());
    }
    FakeLease lease{loop, world.calls};
};

// The witness unreachable while the pair agrees: the running node keeps running, and keeps
// trying to renew.
TEST_F(LeaseRunnerTest, TheWitnessDownWhileThePairAgreesChangesNothing) {
    bring_to_prim();
    world.calls.clear();
    for (int i = 0; i < 20; ++i) {
        runner->on_peer_message(report("SECOND"));
        clock.tick();
        loop.drain();
    }
    EXPECT_EQ(runner->state(), State::prim) << runner->reason();
    EXPECT_EQ(index_of("imagesync.demote"), world.calls.size());
    EXPECT_LT(index_of("lease.acquire"), world.calls.size());
}

// Neither the peer nor the witness: imagesync refuses writes first, then the VM is powered off at
// once (rule 65, no graceful shutdown);
// with the lease held, it runs on alone.
TEST_F(LeaseRunnerTest, ARunningNodeWithoutLeaseOrPeerFencesItself) {
    lease.held_by("hv1");
    bring_to_prim();
    clock.tick();
    loop.drain();
    runner->on_peer_liveness(Liveness::lost);
    runner->on_peer_channel(false);
    world.is.link = Link::down;
    loop.drain();
    clock.tick();
    loop.drain();
    EXPECT_EQ(runner->state(), State::alone) << runner->reason();
    world.calls.clear();
    lease.answer = Error(errc::timeout, "the witness did not answer");
    for (int i = 0; i < 15 && runner->state() != State::wait; ++i) {
        clock.tick();
        loop.drain();
    }
    EXPECT_EQ(runner->state(), State::wait);
    ASSERT_FALSE(world.transitions.empty());
    EXPECT_EQ(world.transitions.back(), "ALONE->WAIT 65");
    EXPECT_LT(index_of("imagesync.demote"), index_of("vm.power_off")) << "writes refused before the VM goes";
    EXPECT_EQ(index_of("vm.stop"), world.calls.size()) << "a self-fence waits for no guest shutdown";
    EXPECT_FALSE(world.is.primary);
}

// A node whose peer is lost starts the VM only with the lease, and only once its own last
// agreeing report is older than the hold-off.
TEST_F(LeaseRunnerTest, APeerLostIsTakenOverOnlyWithTheLease) {
    bring_to_second();
    // hv2 renewed 8 s ago, before it was lost: it did not go on alone since.
    lease.held_by("hv2", 1, Duration(2000));
    runner->on_peer_channel(false);
    runner->on_peer_liveness(Liveness::lost);
    world.is.link = Link::down;
    loop.drain();
    for (int i = 0; i < 5; ++i) {
        clock.tick();
        loop.drain();
    }
    EXPECT_EQ(runner->state(), State::wait) << runner->reason();
    EXPECT_EQ(runner->status_json()["rule"], 66);
    EXPECT_EQ(index_of("vm.start"), world.calls.size());
    lease.held_by("hv1", 2);
    for (int i = 0; i < 30 && runner->state() == State::wait; ++i) {
        clock.tick();
        loop.drain();
    }
    EXPECT_EQ(runner->state(), State::alone) << runner->reason();
    EXPECT_LT(index_of("vm.start"), world.calls.size());
}

// A swap: the old primary releases the lease once it has demoted.
TEST_F(LeaseRunnerTest, TheOldPrimaryReleasesTheLeaseAfterAHandOver) {
    bring_to_prim();
    lease.held_by("hv1");
    clock.tick();
    loop.drain();
    world.calls.clear();
    bool swapped = false;
    runner->op_swap([&](Status st) { swapped = st.ok(); });
    loop.drain();
    for (int i = 0; i < 3; ++i) {
        runner->on_peer_message(report("SECOND"));
        clock.tick();
        loop.drain();
    }
    EXPECT_TRUE(swapped);
    EXPECT_LT(index_of("imagesync.demote"), index_of("lease.release"));
    EXPECT_LT(index_of("lease.release"), world.calls.size());
}

// ---------------------------------------------------------------------------- the fencing hook

// The hook as the runner sees it: every run answers `answer`.
struct FakeFence final : FencePort {
    Loop& loop;
    std::vector<std::string>& calls;
    Status answer = Error(errc::busy, "command \"/bin/fence\" exited with status 1: BMC unreachable");
    FakeFence(Loop& l, std::vector<std::string>& c) : loop(l), calls(c) {}
    void fence_peer(Done done) override {
        calls.push_back("fence.run");
        auto a = answer;
        loop.post([done, a] { done(a); });
    }
};

class FenceRunnerTest : public RunnerTest {
protected:
    FenceRunnerTest() {
        const RunnerConfig c = base_config();
        runner = std::make_unique<ModuleRunner>(c, clock, world, vm, world, world, world, nullptr, &fence);
    }
    std::size_t count(const std::string& call) {
        return static_cast<std::size_t>(std::count(world.calls.begin(), world.calls.end(), call));
    }
    std::size_t index_of(const std::string& call) {
        return static_cast<std::size_t>(std::find(world.calls.begin(), world.calls.end(), call) - world.calls.begin());
    }
    FakeFence fence{loop, world.calls};
};

// Starting with the peer's grant while it is alive needs no hook.
TEST_F(FenceRunnerTest, AStartWithThePeersGrantRunsNoHook) {
    bring_to_prim();
    EXPECT_EQ(count("fence.run"), 0u);
    EXPECT_FALSE(runner->status_json()["fencing"]["peer_fenced"].get<bool>());
}

// The peer lost: the VM starts only once the hook has fenced it; a failing hook is run again
// 10 s later, and its reason is the module's reason meanwhile.
TEST_F(FenceRunnerTest, APeerLostIsTakenOverOnlyOnceTheHookFencedIt) {
    bring_to_second();
    world.calls.clear();
    runner->on_peer_channel(false);
    runner->on_peer_liveness(Liveness::lost);
    world.is.link = Link::down;
    loop.drain();
    EXPECT_EQ(runner->state(), State::wait) << runner->reason();
    EXPECT_EQ(runner->status_json()["rule"], 67);
    EXPECT_EQ(count("fence.run"), 1u);
    EXPECT_NE(runner->reason().find("the fencing hook failed: command \"/bin/fence\" exited with status 1: "
                                    "BMC unreachable"),
              std::string::npos)
        << runner->reason();
    for (int i = 0; i < 5; ++i) {
        clock.tick();
        loop.drain();
    }
    EXPECT_EQ(count("fence.run"), 1u) << "not again before 10 s";
    EXPECT_EQ(index_of("vm.start"), world.calls.size());
    fence.answer = {};
    for (int i = 0; i < 10 && runner->state() == State::wait; ++i) {
        clock.tick();
        loop.drain();
    }
    EXPECT_EQ(count("fence.run"), 2u);
    EXPECT_EQ(runner->state(), State::alone) << runner->reason();
    EXPECT_LT(index_of("fence.run"), index_of("vm.start"));
    EXPECT_TRUE(runner->status_json()["fencing"]["peer_fenced"].get<bool>());
    // The peer heard again, then lost again: fenced anew.
    runner->on_peer_liveness(Liveness::alive);
    loop.drain();
    EXPECT_FALSE(runner->status_json()["fencing"]["peer_fenced"].get<bool>());
}

}  // namespace
}  // namespace vmha::module
