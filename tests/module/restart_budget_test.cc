#include <gtest/gtest.h>

#include <vmha/module/restart_budget.h>

namespace vmha::module {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

TEST(RestartBudget, AllowsAttemptsWithinTheWindowThenRefuses) {
    RestartBudget budget(3, 24h);
    const Clock::time_point t0{1000h};
    EXPECT_EQ(budget.used(t0), 0u);
    EXPECT_TRUE(budget.try_consume(t0));
    EXPECT_TRUE(budget.try_consume(t0 + 1h));
    EXPECT_TRUE(budget.try_consume(t0 + 2h));
    EXPECT_EQ(budget.used(t0 + 2h), 3u);
    EXPECT_EQ(budget.remaining(t0 + 2h), 0u);
    EXPECT_FALSE(budget.try_consume(t0 + 3h));
    EXPECT_EQ(budget.used(t0 + 3h), 3u) << "a refused attempt is not recorded";
}

TEST(RestartBudget, AnAttemptLeavesTheWindowExactlyOneWindowLater) {
    RestartBudget budget(3, 24h);
    const Clock::time_point t0{1000h};
    ASSERT_TRUE(budget.try_consume(t0));
    ASSERT_TRUE(budget.try_consume(t0 + 1h));
    ASSERT_TRUE(budget.try_consume(t0 + 2h));
    EXPECT_FALSE(budget.try_consume(t0 + 24h - 1ns));
    EXPECT_EQ(budget.used(t0 + 24h - 1ns), 3u);
    EXPECT_EQ(budget.used(t0 + 24h), 2u);
    EXPECT_TRUE(budget.try_consume(t0 + 24h));
    EXPECT_FALSE(budget.try_consume(t0 + 25h - 1ns));
    EXPECT_TRUE(budget.try_consume(t0 + 25h));
    EXPECT_EQ(budget.used(t0 + 100h), 0u);
}

TEST(RestartBudget, ResetForgetsEveryAttempt) {
    RestartBudget budget(2, 1h);
    const Clock::time_point t0{5h};
    ASSERT_TRUE(budget.try_consume(t0));
    ASSERT_TRUE(budget.try_consume(t0));
    ASSERT_FALSE(budget.try_consume(t0));
    budget.reset();
    EXPECT_EQ(budget.used(t0), 0u);
    EXPECT_TRUE(budget.try_consume(t0));
}

TEST(RestartBudget, ZeroAttemptsNeverAllowsARestart) {
    RestartBudget budget(0, 24h);
    EXPECT_FALSE(budget.try_consume(Clock::time_point{1h}));
    EXPECT_EQ(budget.used(Clock::time_point{1h}), 0u);
}

}  // namespace
}  // namespace vmha::module
