// The vm checker against a scripted Hypervisor: events, polling, I/O-error pauses, the guest
// agent, hypervisor failures and hangs, suspend/resume.
#include <condition_variable>
#include <mutex>

#include <checkers/domain_events.h>

#include "harness.h"

namespace vmha::checkers::test {
namespace {

// A Hypervisor whose domain status and guest agent the test sets; status() can be held.
class ScriptedHypervisor : public hv::Hypervisor {
  public:
    void set(hv::DomainState state, std::string reason = {}) {
        std::lock_guard lock(mutex_);
        status_ = hv::DomainStatus{state, std::move(reason)};
        error_.reset();
    }
    void fail_with(Error e) {
        std::lock_guard lock(mutex_);
        error_ = std::move(e);
    }
    void set_agent(Status s) {
        std::lock_guard lock(mutex_);
        agent_ = std::move(s);
    }
    void hold() {
        std::lock_guard lock(mutex_);
        held_ = true;
    }
    void release() {
        {
            std::lock_guard lock(mutex_);
            held_ = false;
        }
        cv_.notify_all();
    }
    int status_calls() const {
        std::lock_guard lock(mutex_);
        return status_calls_;
    }
    int agent_calls() const {
        std::lock_guard lock(mutex_);
        return agent_calls_;
    }

    Result<hv::DomainStatus> status(const std::string& domain) override {
        std::unique_lock lock(mutex_);
        ++status_calls_;
        cv_.wait(lock, [&] { return !held_; });
        if (domain != "web1") return hv::DomainStatus{};
        if (error_) return *error_;
        return status_;
    }
    Status ping_guest_agent(const std::string&, std::chrono::milliseconds) override {
        std::lock_guard lock(mutex_);
        ++agent_calls_;
        return agent_;
    }
    Status define(const hv::DomainSpec&) override { return {}; }
    Status undefine(const std::string&) override { return {}; }
    Status start(const std::string&) override { return {}; }
    Status shutdown(const std::string&, std::chrono::milliseconds) override { return {}; }
    Status destroy(const std::string&) override { return {}; }
    Status resume(const std::string&) override { return {}; }
    Status watch(EventHandler) override { return {}; }

  private:
    mutable std::mutex mutex_;
    std::condition_variable cv_;
    hv::DomainStatus status_{hv::DomainState::running, "booted"};
    std::optional<Error> error_;
    Status agent_;
    bool held_ = false;
    int status_calls_ = 0;
    int agent_calls_ = 0;
};

struct VmCheckerTest : ::testing::Test {
    ScriptedHypervisor hv;  // outlives the harness's pool
    DomainEvents events;
    Harness h;
    config::Checker config = checker_config(config::CheckerKind::vm, "vm");

    ~VmCheckerTest() override { hv.release(); }

    std::unique_ptr<Checker> make(std::string domain = "web1") {
        CheckerContext ctx = h.context();
        ctx.hypervisor = &hv;
        ctx.domain = std::move(domain);
        ctx.events = &events;
        return make_or_fail(config, std::move(ctx));
    }
    void publish(hv::EventKind kind, std::string detail = {}) {
        events.publish(hv::LifecycleEvent{"web1", kind, std::move(detail)});
    }
};

TEST_F(VmCheckerTest, ARunningDomainIsHealthy) {
    auto checker = make();
    checker->start(h.recorder());
    ASSERT_TRUE(h.wait_reports(1));
    EXPECT_EQ(h.reports[0].verdict, Verdict::healthy);
    EXPECT_EQ(h.reports[0].cause, Cause::none);
    EXPECT_EQ(hv.agent_calls(), 0) << "guest_agent is off";
}

TEST_F(VmCheckerTest, ALifecycleEventIsSeenAtOnceWithoutPolling) {
    config.interval = std::chrono::hours(1);
    auto checker = make();
    checker->start(h.recorder());
    ASSERT_TRUE(h.wait_reports(1));
    ASSERT_EQ(h.reports[0].verdict, Verdict::healthy);
    hv.set(hv::DomainState::shutoff, "crashed");
    publish(hv::EventKind::stopped, "crashed");
    ASSERT_TRUE(h.wait_reports(2));
    EXPECT_EQ(h.reports[1].verdict, Verdict::failed);
    EXPECT_EQ(h.reports[1].cause, Cause::stopped);
    EXPECT_EQ(h.reports[1].reason, "domain \"web1\" shut off (crashed)");
    EXPECT_EQ(hv.status_calls(), 2);
}

TEST_F(VmCheckerTest, EventsOfOtherDomainsAreIgnored) {
    config.interval = std::chrono::hours(1);
    auto checker = make();
    checker->start(h.recorder());
    ASSERT_TRUE(h.wait_reports(1));
    events.publish(hv::LifecycleEvent{"db1", hv::EventKind::crashed, ""});
    h.run_for(std::chrono::milliseconds(100));
    EXPECT_EQ(hv.status_calls(), 1);
}

TEST_F(VmCheckerTest, PollingFindsAChangeWithoutEvents) {
    auto checker = make();
    checker->start(h.recorder());
    ASSERT_TRUE(h.wait_reports(1));
    hv.set(hv::DomainState::crashed, "panicked");
    ASSERT_TRUE(h.wait_reports(2));
    EXPECT_EQ(h.reports[1].verdict, Verdict::failed);
    EXPECT_EQ(h.reports[1].cause, Cause::stopped);
    EXPECT_EQ(h.reports[1].reason, "domain \"web1\" crashed (panicked)");
    hv.set(hv::DomainState::running, "booted");
    ASSERT_TRUE(h.wait_reports(3));
    EXPECT_EQ(h.reports[2].verdict, Verdict::healthy);
}

TEST_F(VmCheckerTest, AnAbsentDomainFails) {
    auto checker = make("nosuch");
    checker->start(h.recorder());
    ASSERT_TRUE(h.wait_reports(1));
    EXPECT_EQ(h.reports[0].verdict, Verdict::failed);
    EXPECT_EQ(h.reports[0].cause, Cause::stopped);
    EXPECT_EQ(h.reports[0].reason, "domain \"nosuch\" is not defined on this hypervisor");
}

TEST_F(VmCheckerTest, APauseOnAnIoErrorHasItsOwnCause) {
    auto checker = make();
    checker->start(h.recorder());
    ASSERT_TRUE(h.wait_reports(1));
    hv.set(hv::DomainState::paused, "ioerror");
    ASSERT_TRUE(h.wait_reports(2));
    EXPECT_EQ(h.reports[1].verdict, Verdict::failed);
    EXPECT_EQ(h.reports[1].cause, Cause::paused_on_io_error);
    EXPECT_EQ(h.reports[1].reason, "domain \"web1\" paused on an I/O error");
    hv.set(hv::DomainState::paused, "user");
    ASSERT_TRUE(h.wait_reports(3)) << "a change of cause is reported";
    EXPECT_EQ(h.reports[2].verdict, Verdict::failed);
    EXPECT_EQ(h.reports[2].cause, Cause::paused);
    EXPECT_EQ(h.reports[2].reason, "domain \"web1\" is paused (user)");
}

TEST_F(VmCheckerTest, AGuestAgentThatDoesNotAnswerMeansHung) {
    config.guest_agent = true;
    auto checker = make();
    checker->start(h.recorder());
    ASSERT_TRUE(h.wait_reports(1));
    EXPECT_EQ(h.reports[0].verdict, Verdict::healthy);
    EXPECT_GE(hv.agent_calls(), 1);
    hv.set_agent(Error(errc::timeout, "guest agent of domain \"web1\" did not answer in 2s"));
    ASSERT_TRUE(h.wait_reports(2));
    EXPECT_EQ(h.reports[1].verdict, Verdict::failed);
    EXPECT_EQ(h.reports[1].cause, Cause::hung);
    EXPECT_NE(h.reports[1].reason.find("did not answer in 2s"), std::string::npos)
        << h.reports[1].reason;
}

TEST_F(VmCheckerTest, AFailingHypervisorMeansUnknown) {
    hv.fail_with(Error(errc::connection_lost, "libvirt connection \"qemu:///system\" was lost"));
    auto checker = make();
    checker->start(h.recorder());
    ASSERT_TRUE(h.wait_reports(1));
    EXPECT_EQ(h.reports[0].verdict, Verdict::unknown);
    EXPECT_EQ(h.reports[0].reason,
              "domain \"web1\": status could not be read: libvirt "
              "connection \"qemu:///system\" was lost");
}

TEST_F(VmCheckerTest, AHypervisorThatHangsMeansUnknownAfterTheTimeout) {
    config.timeout = std::chrono::milliseconds(100);
    hv.hold();
    auto checker = make();
    checker->start(h.recorder());
    ASSERT_TRUE(h.wait_reports(1));
    EXPECT_EQ(h.reports[0].verdict, Verdict::unknown);
    EXPECT_NE(h.reports[0].reason.find("did not answer within 1s100ms"), std::string::npos)
        << h.reports[0].reason;
    h.run_for(std::chrono::milliseconds(200));
    EXPECT_EQ(hv.status_calls(), 1) << "no second call while the first is stuck";
    hv.release();
    ASSERT_TRUE(h.wait_reports(2));
    EXPECT_EQ(h.reports[1].verdict, Verdict::healthy);
}

TEST_F(VmCheckerTest, SuspendedWhileVmhaStopsTheVm) {
    config.interval = std::chrono::hours(1);
    auto checker = make();
    checker->start(h.recorder());
    ASSERT_TRUE(h.wait_reports(1));
    checker->suspend();
    hv.set(hv::DomainState::paused, "user");
    publish(hv::EventKind::suspended, "paused");
    ASSERT_TRUE(h.run_until([&] { return hv.status_calls() >= 2; }));
    h.run_for(std::chrono::milliseconds(100));
    EXPECT_EQ(h.reports.size(), 1u);
    hv.set(hv::DomainState::running, "unpaused");
    checker->resume();
    ASSERT_TRUE(h.wait_reports(2));
    EXPECT_EQ(h.reports[1].verdict, Verdict::healthy);
}

TEST_F(VmCheckerTest, NoReportAfterStopWithACallInFlight) {
    hv.hold();
    auto checker = make();
    checker->start(h.recorder());
    ASSERT_TRUE(h.run_until([&] { return hv.status_calls() == 1; }));
    checker->stop();
    publish(hv::EventKind::crashed);  // unsubscribed: nothing happens
    hv.release();
    checker.reset();
    h.run_for(std::chrono::milliseconds(100));
    EXPECT_TRUE(h.reports.empty());
}

TEST_F(VmCheckerTest, RefusesAContextWithoutHypervisorOrDomain) {
    CheckerContext ctx = h.context();
    auto made = make_checker(config, ctx);
    ASSERT_FALSE(made);
    EXPECT_TRUE(made.error().is(errc::invalid_argument));
    EXPECT_EQ(made.error().message, "checker \"vm\" (vm): no hypervisor was given");
}

}  // namespace
}  // namespace vmha::checkers::test
