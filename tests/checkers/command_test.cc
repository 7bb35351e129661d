// The command checker with real commands.
#include "harness.h"
#include "probes.h"

namespace vmha::checkers::test {
namespace {

struct CommandTest : ::testing::Test {
    Harness h;
    TempDir dir;
    config::Checker config = checker_config(config::CheckerKind::command, "cmd");

    std::unique_ptr<Checker> make(std::vector<std::string> argv) {
        config.command = std::move(argv);
        return make_or_fail(config, h.context());
    }
    // Kills any process left with this comm (ours: the name is unique).
    static void kill_all(const std::string& comm) {
        for (pid_t pid : pids_with_comm(comm)) ::kill(pid, SIGKILL);
    }
};

TEST_F(CommandTest, ExitStatusZeroIsHealthy) {
    auto checker = make({"true"});
    checker->start(h.recorder());
    ASSERT_TRUE(h.wait_reports(1));
    EXPECT_EQ(h.reports[0].verdict, Verdict::healthy) << h.reports[0].reason;
    EXPECT_EQ(h.reports[0].reason, "command \"true\" succeeded");
}

TEST_F(CommandTest, ANonZeroExitFailsWithTheStatusAndTheFirstLine) {
    auto checker = make({"/bin/sh", "-c", "echo; echo 'disk almost full' >&2; echo more; exit 3"});
    checker->start(h.recorder());
    ASSERT_TRUE(h.wait_reports(1));
    EXPECT_EQ(h.reports[0].verdict, Verdict::failed);
    EXPECT_EQ(h.reports[0].reason, "command \"/bin/sh\" exited with status 3: disk almost full");
}

TEST_F(CommandTest, NoShellIsInvolved) {
    auto checker = make({"/bin/echo", "$HOME", "|", "false"});
    checker->start(h.recorder());
    ASSERT_TRUE(h.wait_reports(1));
    EXPECT_EQ(h.reports[0].verdict, Verdict::healthy) << h.reports[0].reason;
}

TEST_F(CommandTest, ACommandThatHangsIsKilledAfterTheTimeoutAndReaped) {
    const std::string name = "ckhang" + unique_suffix();
    const auto sleeper = copy_sleep(dir, name);
    config.timeout = std::chrono::milliseconds(300);
    config.interval = std::chrono::hours(1);
    auto checker = make({sleeper.string(), "300"});
    checker->start(h.recorder());
    ASSERT_TRUE(h.run_until([&] { return !pids_with_comm(name).empty(); }));
    ASSERT_TRUE(h.wait_reports(1));
    EXPECT_EQ(h.reports[0].verdict, Verdict::failed);
    EXPECT_EQ(h.reports[0].reason, "command \"" + sleeper.string() + "\" timed out after 300ms");
    EXPECT_TRUE(pids_with_comm(name).empty()) << "killed and reaped (no zombie)";
    kill_all(name);
}

TEST_F(CommandTest, TheWholeProcessGroupIsKilledOnTimeout) {
    const std::string name = "ckgrp" + unique_suffix();
    const auto sleeper = copy_sleep(dir, name);
    config.timeout = std::chrono::milliseconds(300);
    config.interval = std::chrono::hours(1);
    // The shell waits for a grandchild; both must go.
    auto checker = make({"/bin/sh", "-c", sleeper.string() + " 300 & wait"});
    checker->start(h.recorder());
    ASSERT_TRUE(h.wait_reports(1));
    EXPECT_NE(h.reports[0].reason.find("timed out after 300ms"), std::string::npos)
        << h.reports[0].reason;
    // The grandchild was killed too; init reaps it (a zombie does not count as alive).
    EXPECT_TRUE(
        h.run_until([&] { return !detail::process_exists(name); }, std::chrono::seconds(10)));
    kill_all(name);
}

TEST_F(CommandTest, AGrandchildHoldingTheOutputDoesNotDelayTheVerdict) {
    const std::string name = "ckbg" + unique_suffix();
    const auto sleeper = copy_sleep(dir, name);
    config.timeout = std::chrono::seconds(60);
    config.interval = std::chrono::hours(1);
    auto checker = make({"/bin/sh", "-c", sleeper.string() + " 300 & echo spawned; exit 1"});
    checker->start(h.recorder());
    ASSERT_TRUE(h.wait_reports(1, std::chrono::seconds(30)));
    EXPECT_EQ(h.reports[0].verdict, Verdict::failed);
    EXPECT_EQ(h.reports[0].reason, "command \"/bin/sh\" exited with status 1: spawned");
    kill_all(name);
}

TEST_F(CommandTest, AMissingExecutableFails) {
    auto checker = make({"/nonexistent/vmha-check"});
    checker->start(h.recorder());
    ASSERT_TRUE(h.wait_reports(1));
    EXPECT_EQ(h.reports[0].verdict, Verdict::failed);
    EXPECT_EQ(h.reports[0].reason,
              "command \"/nonexistent/vmha-check\" could not be started (spawn): No such file or "
              "directory");
}

TEST_F(CommandTest, StopKillsTheRunningCommandAndReportsNothing) {
    const std::string name = "ckstop" + unique_suffix();
    const auto sleeper = copy_sleep(dir, name);
    auto checker = make({sleeper.string(), "300"});
    checker->start(h.recorder());
    ASSERT_TRUE(h.run_until([&] { return !pids_with_comm(name).empty(); }));
    checker->stop();
    checker.reset();
    EXPECT_TRUE(h.run_until([&] { return pids_with_comm(name).empty(); }))
        << "killed and reaped after stop()";
    h.run_for(std::chrono::milliseconds(50));
    EXPECT_TRUE(h.reports.empty());
    kill_all(name);
}

TEST_F(CommandTest, RefusesAnEmptyCommand) {
    auto made = make_checker(config, h.context());
    ASSERT_FALSE(made);
    EXPECT_EQ(made.error().message, "checker \"cmd\" (command): no command was given");
}

}  // namespace
}  // namespace vmha::checkers::test
