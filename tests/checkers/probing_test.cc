// The shared probing loop: failures count, reports on change, suspend/resume, stop().
#include <deque>

#include <boost/asio/post.hpp>

#include "harness.h"
#include "probe.h"

namespace vmha::checkers::test {
namespace {

using detail::ProbingChecker;

// A probe whose results the test scripts; each check completes when the test says so.
struct Script {
    std::deque<Verdict> results;  // the next checks' verdicts; empty = nothing to answer yet
    int runs = 0;
    int cancels = 0;
    detail::Probe::Done pending;
};

class ScriptedProbe : public detail::Probe {
  public:
    ScriptedProbe(asio::any_io_executor ex, std::shared_ptr<Script> s)
        : ex_(std::move(ex)), s_(std::move(s)) {}
    void run(Done done) override {
        ++s_->runs;
        s_->pending = std::move(done);
        answer(ex_, s_);
    }
    void cancel() override {
        ++s_->cancels;
        s_->pending = nullptr;
    }
    // Completes the pending check with the next scripted verdict, if both exist.
    static void answer(const asio::any_io_executor& ex, const std::shared_ptr<Script>& s) {
        if (!s->pending || s->results.empty()) return;
        const Verdict v = s->results.front();
        s->results.pop_front();
        auto done = std::move(s->pending);
        s->pending = nullptr;
        asio::post(ex, [done = std::move(done), v] {
            done(detail::make_result(v, std::string(to_string(v))));
        });
    }

  private:
    asio::any_io_executor ex_;
    std::shared_ptr<Script> s_;
};

struct ProbingTest : ::testing::Test {
    Harness h;
    std::shared_ptr<Script> script = std::make_shared<Script>();
    std::unique_ptr<ProbingChecker> checker;

    void make(unsigned failures, std::chrono::milliseconds interval = std::chrono::hours(1)) {
        checker = std::make_unique<ProbingChecker>(
            "scripted", h.io.get_executor(), detail::Schedule{interval, failures},
            std::make_unique<ScriptedProbe>(h.io.get_executor(), script));
    }
    // Answers the next check with `v` and runs until it has been judged.
    void step(Verdict v) {
        const int before = script->runs;
        if (script->pending == nullptr) checker->check_now();
        ASSERT_TRUE(h.run_until([&] { return script->runs > before || script->pending; }));
        script->results.push_back(v);
        ScriptedProbe::answer(h.io.get_executor(), script);
        ASSERT_TRUE(h.run_until([&] { return script->results.empty() && !script->pending; }));
        h.run_for(std::chrono::milliseconds(20));
    }
    std::vector<Verdict> verdicts() const {
        std::vector<Verdict> out;
        for (const auto& r : h.reports) out.push_back(r.verdict);
        return out;
    }
};

TEST_F(ProbingTest, ReportsTheFirstVerdictAndThenOnlyChanges) {
    make(1);
    checker->start(h.recorder());
    step(Verdict::healthy);
    step(Verdict::healthy);
    step(Verdict::failed);
    step(Verdict::failed);
    step(Verdict::unknown);
    step(Verdict::healthy);
    EXPECT_EQ(verdicts(),
              (std::vector{Verdict::healthy, Verdict::failed, Verdict::unknown, Verdict::healthy}));
}

TEST_F(ProbingTest, FailuresCountNeedsThatManyFailedChecksInARow) {
    make(3);
    checker->start(h.recorder());
    step(Verdict::healthy);
    step(Verdict::failed);
    step(Verdict::failed);
    EXPECT_EQ(verdicts(), std::vector{Verdict::healthy}) << "two failures of three: still healthy";
    step(Verdict::healthy);  // breaks the streak
    step(Verdict::failed);
    step(Verdict::failed);
    EXPECT_EQ(verdicts(), std::vector{Verdict::healthy});
    step(Verdict::failed);
    EXPECT_EQ(verdicts(), (std::vector{Verdict::healthy, Verdict::failed}));
    step(Verdict::failed);
    step(Verdict::healthy);
    EXPECT_EQ(verdicts(), (std::vector{Verdict::healthy, Verdict::failed, Verdict::healthy}));
}

TEST_F(ProbingTest, AFirstFailureBelowTheCountIsReportedAsUnknown) {
    make(2);
    checker->start(h.recorder());
    step(Verdict::failed);
    ASSERT_EQ(h.reports.size(), 1u);
    EXPECT_EQ(h.reports[0].verdict, Verdict::unknown);
    EXPECT_NE(h.reports[0].reason.find("1 of 2 consecutive failures"), std::string::npos)
        << h.reports[0].reason;
    step(Verdict::failed);
    EXPECT_EQ(verdicts(), (std::vector{Verdict::unknown, Verdict::failed}));
}

TEST_F(ProbingTest, PollsEveryInterval) {
    make(1, std::chrono::milliseconds(10));
    for (int i = 0; i < 5; ++i) script->results.push_back(Verdict::healthy);
    script->results.push_back(Verdict::failed);
    checker->start(h.recorder());
    ASSERT_TRUE(h.run_until([&] {
        ScriptedProbe::answer(h.io.get_executor(), script);
        return h.reports.size() >= 2;
    }));
    EXPECT_EQ(script->runs, 6);
    EXPECT_EQ(verdicts(), (std::vector{Verdict::healthy, Verdict::failed}));
}

TEST_F(ProbingTest, NoReportAfterStopEvenIfTheCheckCompletes) {
    make(1);
    checker->start(h.recorder());
    ASSERT_TRUE(h.run_until([&] { return script->pending != nullptr; }));
    auto late = script->pending;  // a completion that arrives after stop()
    checker->stop();
    EXPECT_EQ(script->cancels, 1);
    late(detail::make_result(Verdict::failed, "late"));
    h.run_for(std::chrono::milliseconds(50));
    EXPECT_TRUE(h.reports.empty());
    checker->stop();  // idempotent
    checker.reset();
    late(detail::make_result(Verdict::failed, "after destruction"));
    EXPECT_TRUE(h.reports.empty());
}

TEST_F(ProbingTest, AReportHandlerMayStopTheChecker) {
    make(1, std::chrono::milliseconds(1));
    for (int i = 0; i < 10; ++i) script->results.push_back(Verdict::failed);
    checker->start([&](const CheckResult& r) {
        h.reports.push_back(r);
        checker->stop();
    });
    ASSERT_TRUE(h.wait_reports(1));
    h.run_for(std::chrono::milliseconds(50));
    EXPECT_EQ(h.reports.size(), 1u);
    EXPECT_EQ(script->runs, 1);
}

TEST_F(ProbingTest, AReportHandlerMayDestroyTheChecker) {
    make(1, std::chrono::milliseconds(1));
    for (int i = 0; i < 10; ++i) script->results.push_back(Verdict::healthy);
    checker->start([&](const CheckResult& r) {
        h.reports.push_back(r);
        checker.reset();
    });
    ASSERT_TRUE(h.wait_reports(1));
    h.run_for(std::chrono::milliseconds(50));
    EXPECT_EQ(h.reports.size(), 1u);
    EXPECT_EQ(checker, nullptr);
}

TEST_F(ProbingTest, SuspendedResultsAreDroppedAndResumeReportsAgain) {
    make(1);
    checker->start(h.recorder());
    step(Verdict::healthy);
    checker->suspend();
    step(Verdict::failed);  // the module is stopping the VM on purpose
    step(Verdict::failed);
    EXPECT_EQ(verdicts(), std::vector{Verdict::healthy});
    checker->resume();
    step(Verdict::healthy);
    EXPECT_EQ(verdicts(), (std::vector{Verdict::healthy, Verdict::healthy}))
        << "the first verdict after resume() is reported even when unchanged";
}

}  // namespace
}  // namespace vmha::checkers::test
