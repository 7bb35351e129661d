// The process checker finds a process the test started, then not after it is killed.
#include "harness.h"
#include "probes.h"

namespace vmha::checkers::test {
namespace {

struct ProcessTest : ::testing::Test {
    Harness h;
    TempDir dir;
};

TEST_F(ProcessTest, FindsTheProcessThenNotAfterItIsKilled) {
    const std::string name = "ckproc" + unique_suffix();
    Child child({copy_sleep(dir, name).string(), "300"});
    ASSERT_GT(child.pid, 0);
    auto config = checker_config(config::CheckerKind::process, "proc");
    config.process = name;
    auto checker = make_or_fail(config, h.context());
    checker->start(h.recorder());
    ASSERT_TRUE(h.wait_reports(1));
    EXPECT_EQ(h.reports[0].verdict, Verdict::healthy) << h.reports[0].reason;
    EXPECT_EQ(h.reports[0].reason, "process \"" + name + "\" runs");
    child.kill_and_reap();
    ASSERT_TRUE(h.wait_reports(2));
    EXPECT_EQ(h.reports[1].verdict, Verdict::failed);
    EXPECT_EQ(h.reports[1].reason, "no process \"" + name + "\" runs on this node");
}

TEST_F(ProcessTest, ANameLongerThanCommIsMatchedByTheExecutable) {
    const std::string name = "vmha-checkers-long-name-" + unique_suffix();
    Child child({copy_sleep(dir, name).string(), "300"});
    ASSERT_GT(child.pid, 0);
    ASSERT_TRUE(h.run_until([&] { return detail::process_exists(name); }));
    EXPECT_FALSE(detail::process_exists(name.substr(0, 15) + "x"));
    child.kill_and_reap();
    EXPECT_FALSE(detail::process_exists(name));
}

TEST_F(ProcessTest, AZombieDoesNotCount) {
    const std::string name = "ckzomb" + unique_suffix();
    Child child({copy_sleep(dir, name).string(), "0"});
    ASSERT_GT(child.pid, 0);
    // Exited but not reaped: a zombie.
    siginfo_t info{};
    ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(child.pid), &info, WEXITED | WNOWAIT), 0);
    EXPECT_FALSE(pids_with_comm(name).empty());
    EXPECT_FALSE(detail::process_exists(name));
}

}  // namespace
}  // namespace vmha::checkers::test
