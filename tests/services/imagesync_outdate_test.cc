// imagesync's `outdate` verb with the real imagesyncd and the `imagesync` tool: refused on a
// primary and on a connected secondary; on a disconnected secondary the UpToDate copy becomes
// Outdated, durably (it survives a restart, and promotion is refused afterwards).
#include "harness.h"

namespace services_test {
namespace {

class OutdateTest : public ::testing::Test {
protected:
    std::vector<std::string> args(const TempDir& d, const std::string& role, std::uint16_t listen,
                                  std::uint16_t peer, bool disconnected) {
        std::vector<std::string> a{"--image",  "web1=" + (d / "web1.img").string(),
                                   "--control-socket", (d / "control.sock").string(),
                                   "--role",   role,
                                   "--module", "web1",
                                   "--node",   role == "primary" ? "hv1" : "hv2",
                                   "--listen", fmt::format("127.0.0.1:{}", listen),
                                   "--peer",   fmt::format("127.0.0.1:{}", peer),
                                   "--timeout-ms", "2000"};
        if (disconnected) a.push_back("--disconnected");
        return a;
    }
    ToolResult tool(const TempDir& d, std::vector<std::string> verb) {
        std::vector<std::string> argv{IMAGESYNC_TOOL_PATH, "--control-socket",
                                      (d / "control.sock").string()};
        argv.insert(argv.end(), verb.begin(), verb.end());
        return run_tool(argv, d.path(), std::chrono::seconds(30));
    }
    nlohmann::json status(const TempDir& d) {
        const auto r = tool(d, {"status", "--json"});
        return nlohmann::json::parse(r.output, nullptr, false);
    }
    bool wait_control(const TempDir& d) {
        const auto deadline = Clock::now() + 20s;
        while (Clock::now() < deadline) {
            const int fd = connect_unix(d / "control.sock");
            if (fd >= 0) {
                ::close(fd);
                return true;
            }
            std::this_thread::sleep_for(5ms);  // poll interval
        }
        return false;
    }
};

TEST_F(OutdateTest, DisconnectedSecondaryBecomesOutdatedDurably) {
    TempDir d;
    make_zero_file(d / "web1.img", 1 << 20);
    const auto listen = free_port();
    const auto peer = free_port();
    {
        Daemon a(d, args(d, "primary", listen, peer, true));  // a new pair's primary: UpToDate
        ASSERT_TRUE(a.wait_ready());
        ASSERT_TRUE(wait_control(d));
        auto r = tool(d, {"outdate"});
        EXPECT_EQ(r.exit_code, 1) << r.output;
        EXPECT_NE(r.output.find("primary"), std::string::npos) << r.output;
        EXPECT_EQ(status(d)["data_state"], "UpToDate");

        r = tool(d, {"demote"});
        ASSERT_EQ(r.exit_code, 0) << r.output;
        r = tool(d, {"outdate"});
        EXPECT_EQ(r.exit_code, 0) << r.output;
        EXPECT_EQ(status(d)["data_state"], "Outdated");
        r = tool(d, {"outdate"});  // again: nothing to change
        EXPECT_EQ(r.exit_code, 0) << r.output;
        ASSERT_TRUE(a.stop());
    }
    Daemon b(d, args(d, "secondary", listen, peer, true));
    ASSERT_TRUE(b.wait_ready());
    ASSERT_TRUE(wait_control(d));
    EXPECT_EQ(status(d)["data_state"], "Outdated") << "the mark must survive a restart";
    const auto promote = tool(d, {"promote"});
    EXPECT_EQ(promote.exit_code, 1) << promote.output;
    EXPECT_NE(promote.output.find("Outdated"), std::string::npos) << promote.output;
}

TEST_F(OutdateTest, ConnectedSecondaryRefuses) {
    TempDir pd;
    TempDir sd;
    make_zero_file(pd / "web1.img", 1 << 20);
    make_zero_file(sd / "web1.img", 1 << 20);
    const auto primary_port = free_port();
    const auto secondary_port = free_port();
    Daemon primary(pd, args(pd, "primary", primary_port, secondary_port, false));
    Daemon secondary(sd, args(sd, "secondary", secondary_port, primary_port, false));
    ASSERT_TRUE(primary.wait_ready());
    ASSERT_TRUE(secondary.wait_ready());
    ASSERT_TRUE(wait_control(sd));
    const auto deadline = Clock::now() + 60s;
    nlohmann::json s;
    while (Clock::now() < deadline) {  // the full resync of a new pair, then connected
        s = status(sd);
        if (s.value("connection", "") == "connected") break;
        std::this_thread::sleep_for(20ms);  // poll interval
    }
    ASSERT_EQ(s.value("connection", ""), "connected") << s.dump(2);
    const auto r = tool(sd, {"outdate"});
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("is connected"), std::string::npos) << r.output;
    EXPECT_EQ(status(sd)["data_state"], "UpToDate");
}

}  // namespace
}  // namespace services_test
