// The real `vmha` binary's admin verbs against an AdminServer with a fake handler: output,
// --json, exit statuses (0 done, 1 refused, 2 unreachable, 64 usage), socket selection.
#include "admin_fixture.h"

namespace services_test {
namespace {

class CliTest : public AdminFixture {
protected:
    ToolResult vmha(std::vector<std::string> args) {
        std::vector<std::string> argv{VMHA_CLI_PATH, "--socket", socket_path.string()};
        argv.insert(argv.end(), args.begin(), args.end());
        return run_tool(argv, dir.path(), std::chrono::seconds(30));
    }
};

TEST_F(CliTest, StatusTable) {
    const auto r = vmha({"status"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("node hv1"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("MODULE"), std::string::npos) << r.output;
    for (const char* want : {"web1", "PRIM", "peer hv2 is SECOND and UpToDate", "UpToDate",
                             "hv2 SECOND (UpToDate)", "running", "75.0% of 4.0 MiB"}) {
        EXPECT_NE(r.output.find(want), std::string::npos) << want << " in:\n" << r.output;
    }
    EXPECT_EQ(r.output.find("\033["), std::string::npos) << "no colours when not on a tty";
}

TEST_F(CliTest, StatusJsonIsTheResultObject) {
    const auto r = vmha({"status", "web1", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(nlohmann::json::parse(r.output), FakeHandler::status_result());
    EXPECT_EQ(handler.verbs(), std::vector<std::string>{"status web1"});
}

TEST_F(CliTest, RefusalExitsOneWithTheDaemonsError) {
    const auto r = vmha({"status", "db9"});
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("module \"db9\" is not configured on hv1"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("not_found"), std::string::npos) << r.output;
}

TEST_F(CliTest, StartStopSwap) {
    auto r = vmha({"start", "web1"});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("module \"web1\": start done"), std::string::npos) << r.output;
    r = vmha({"stop", "web1"});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    // swap is answered only when the handler is released: the CLI waits for it.
    std::thread releaser([&] {
        const auto deadline = Clock::now() + 20s;
        while (Clock::now() < deadline) {
            const auto v = handler.verbs();
            if (std::find(v.begin(), v.end(), "swap web1") != v.end()) break;
            std::this_thread::sleep_for(5ms);  // poll interval
        }
        LineClient c(socket_path);
        c.send_json({{"version", 1}, {"verb", "release"}});
        c.reply();
    });
    r = vmha({"swap", "web1"});
    releaser.join();
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("module \"web1\" runs on hv2"), std::string::npos) << r.output;
    const auto v = handler.verbs();
    EXPECT_EQ(std::vector<std::string>(v.begin(), v.begin() + 3),
              (std::vector<std::string>{"start web1", "stop web1", "swap web1"}));
    r = vmha({"start", "db9"});
    EXPECT_EQ(r.exit_code, 1) << r.output;
}

TEST_F(CliTest, UnreachableDaemonExitsTwo) {
    const auto missing = dir / "nobody.sock";
    const auto r = run_tool({VMHA_CLI_PATH, "--socket", missing.string(), "status"}, dir.path());
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find("cannot connect to vmhad at " + missing.string() + ": "),
              std::string::npos)
        << r.output;
}

TEST_F(CliTest, SocketFromEnvironment) {
    const auto r = run_tool({"/usr/bin/env", "VMHA_ADMIN_SOCKET=" + socket_path.string(),
                             VMHA_CLI_PATH, "status", "--json"},
                            dir.path());
    EXPECT_EQ(r.exit_code, 0) << r.output;
    const auto bad = run_tool({"/usr/bin/env", "VMHA_ADMIN_SOCKET=" + (dir / "x.sock").string(),
                               VMHA_CLI_PATH, "status"},
                              dir.path());
    EXPECT_EQ(bad.exit_code, 2) << bad.output;
}

TEST_F(CliTest, UsageExitsSixtyFour) {
    EXPECT_EQ(vmha({"swap"}).exit_code, 64);
    EXPECT_EQ(vmha({"start", "a", "b"}).exit_code, 64);
    EXPECT_EQ(vmha({"frobnicate"}).exit_code, 64);
    EXPECT_TRUE(handler.verbs().empty());
}

}  // namespace
}  // namespace services_test
