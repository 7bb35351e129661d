// CommandRunner (the fencing hook's way to run its command) with real commands: exit 0, a
// failure with its status and first line, a timeout that kills the group, a program that does
// not exist, and a cancelled run whose result never arrives.
#include <checkers/run_command.h>

#include "harness.h"

namespace vmha::checkers::test {
namespace {

struct RunCommandTest : ::testing::Test {
    Harness h;
    CommandRunner runner{h.io.get_executor()};
    std::optional<Status> result;

    void start(std::vector<std::string> argv, std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
        result.reset();
        runner.run(std::move(argv), timeout, [this](Status st) { result = std::move(st); });
    }
    bool finished() { return h.run_until([&] { return result.has_value(); }); }
};

TEST_F(RunCommandTest, ExitZeroIsSuccess) {
    start({"/bin/sh", "-c", "echo powered off; exit 0"});
    EXPECT_TRUE(runner.running());
    ASSERT_TRUE(finished());
    EXPECT_TRUE(result->ok());
    EXPECT_FALSE(runner.running());
}

TEST_F(RunCommandTest, FailureNamesTheStatusAndTheFirstLine) {
    start({"/bin/sh", "-c", "echo 'BMC not reachable' >&2; exit 2"});
    ASSERT_TRUE(finished());
    ASSERT_FALSE(result->ok());
    EXPECT_TRUE(result->error().is(errc::busy));
    EXPECT_EQ(result->error().message, "command \"/bin/sh\" exited with status 2: BMC not reachable");
}

TEST_F(RunCommandTest, TimeoutKillsTheGroup) {
    start({"/bin/sh", "-c", "sleep 30 & sleep 30"}, std::chrono::milliseconds(300));
    ASSERT_TRUE(finished());
    ASSERT_FALSE(result->ok());
    EXPECT_TRUE(result->error().is(errc::timeout)) << result->error().message;
    EXPECT_NE(result->error().message.find("timed out after 300ms"), std::string::npos) << result->error().message;
}

TEST_F(RunCommandTest, AMissingProgramIsAFailure) {
    start({"/nonexistent/fence-agent", "hv2"});
    ASSERT_TRUE(finished());
    ASSERT_FALSE(result->ok());
    EXPECT_NE(result->error().message.find("could not be started"), std::string::npos) << result->error().message;
}

TEST_F(RunCommandTest, ACancelledRunNeverAnswers) {
    start({"/bin/sh", "-c", "sleep 30"});
    runner.cancel();
    EXPECT_FALSE(runner.running());
    h.run_for(std::chrono::milliseconds(200));
    EXPECT_FALSE(result.has_value());
    // And the runner takes the next one.
    start({"/bin/true"});
    ASSERT_TRUE(finished());
    EXPECT_TRUE(result->ok());
}

}  // namespace
}  // namespace vmha::checkers::test
