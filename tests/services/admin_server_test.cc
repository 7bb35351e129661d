// The admin socket: round trips through a fake handler, protocol versions, malformed and
// oversized input, concurrent clients, the socket's mode, stale and live socket files.
#include <sys/un.h>

#include "admin_fixture.h"

namespace services_test {
namespace {

using vmha::services::AdminServer;

TEST_F(AdminFixture, StatusRoundTrip) {
    LineClient c(socket_path);
    ASSERT_TRUE(c.connected());
    ASSERT_TRUE(c.send_json({{"version", 1}, {"verb", "status"}}));
    const auto r = c.reply();
    ASSERT_TRUE(r.is_object()) << r.dump();
    EXPECT_EQ(r["version"], 1);
    EXPECT_EQ(r["ok"], true);
    EXPECT_EQ(r["result"], FakeHandler::status_result());

    // Several requests on one connection, answered in order.
    ASSERT_TRUE(c.send_json({{"version", 1}, {"verb", "status"}, {"module", "nope"}}));
    ASSERT_TRUE(c.send_json({{"version", 1}, {"verb", "fail"}}));
    const auto missing = c.reply();
    EXPECT_EQ(missing["ok"], false);
    EXPECT_EQ(missing["code"], "not_found");
    EXPECT_EQ(missing["error"], "module \"nope\" is not configured on hv1");
    EXPECT_EQ(missing["version"], 1);
    const auto busy = c.reply();
    EXPECT_EQ(busy["code"], "busy");
    EXPECT_EQ(handler.verbs(), (std::vector<std::string>{"status", "status nope", "fail"}));
}

TEST_F(AdminFixture, OtherVersionIsRefusedAndTheConnectionStays) {
    LineClient c(socket_path);
    ASSERT_TRUE(c.send_json({{"version", 2}, {"verb", "status"}}));
    const auto r = c.reply();
    EXPECT_EQ(r["ok"], false);
    EXPECT_EQ(r["code"], "version_mismatch");
    EXPECT_EQ(r["version"], 1);
    ASSERT_TRUE(c.send_json({{"verb", "status"}}));  // no version at all
    EXPECT_EQ(c.reply()["code"], "invalid_argument");
    ASSERT_TRUE(c.send_json({{"version", 1}, {"verb", "status"}, {"flags", 4}}));
    EXPECT_EQ(c.reply()["code"], "invalid_argument");
    ASSERT_TRUE(c.send_json({{"version", 1}, {"verb", 7}}));
    EXPECT_EQ(c.reply()["code"], "invalid_argument");
    ASSERT_TRUE(c.send_json({{"version", 1}, {"verb", "status"}}));
    EXPECT_EQ(c.reply()["ok"], true);
    EXPECT_TRUE(handler.verbs() == std::vector<std::string>{"status"});  // only the good one
}

TEST_F(AdminFixture, MalformedJsonIsAnsweredThenClosed) {
    for (const std::string& bad :
         {std::string("this is not json\n"), std::string("[1,2,3]\n"), std::string("{\"version\":1,\n")}) {
        LineClient c(socket_path);
        ASSERT_TRUE(c.send(bad));
        const auto r = c.reply();
        EXPECT_EQ(r["ok"], false) << bad;
        EXPECT_EQ(r["code"], "invalid_argument") << bad;
        EXPECT_TRUE(c.closed_by_peer()) << bad;
    }
    LineClient after(socket_path);  // the server lives on
    ASSERT_TRUE(after.send_json({{"version", 1}, {"verb", "status"}}));
    EXPECT_EQ(after.reply()["ok"], true);
}

TEST_F(AdminFixture, OversizeLineIsAnsweredThenClosed) {
    LineClient c(socket_path);
    ASSERT_TRUE(c.send(std::string(70 * 1024, 'x')));  // no newline within 64 KiB
    const auto r = c.reply();
    EXPECT_EQ(r["code"], "invalid_argument");
    EXPECT_NE(r["error"].get<std::string>().find("64"), std::string::npos) << r.dump();
    EXPECT_TRUE(c.closed_by_peer());
    EXPECT_TRUE(handler.verbs().empty());

    // A line just within the limit is parsed.
    LineClient ok(socket_path);
    nlohmann::json big = {{"version", 1}, {"verb", "status"}, {"pad", ""}};
    const std::size_t overhead = big.dump().size();
    big["pad"] = std::string(vmha::services::admin_max_line - overhead - 1, 'p');
    ASSERT_TRUE(ok.send_json(big));
    EXPECT_EQ(ok.reply()["ok"], true);
}

TEST_F(AdminFixture, ClientsAreServedConcurrently) {
    // A swap held by the handler does not hold up other clients.
    LineClient swapper(socket_path);
    ASSERT_TRUE(swapper.send_json({{"version", 1}, {"verb", "swap"}, {"module", "web1"}}));
    std::vector<std::thread> threads;
    std::atomic<int> good{0};
    for (int t = 0; t < 6; ++t) {
        threads.emplace_back([&] {
            LineClient c(socket_path);
            for (int i = 0; i < 20; ++i) {
                if (!c.send_json({{"version", 1}, {"verb", "status"}, {"module", "web1"}})) return;
                if (c.reply()["ok"] == true) ++good;
            }
        });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(good.load(), 6 * 20);
    EXPECT_FALSE(swapper.line(50ms).has_value());  // still held
    LineClient releaser(socket_path);
    ASSERT_TRUE(releaser.send_json({{"version", 1}, {"verb", "release"}}));
    EXPECT_EQ(releaser.reply()["ok"], true);
    const auto swapped = swapper.reply();
    EXPECT_EQ(swapped["ok"], true);
    EXPECT_EQ(swapped["result"]["message"], "module \"web1\" runs on hv2");
}

TEST_F(AdminFixture, SocketIsRootOnly) {
    struct stat st {};
    ASSERT_EQ(::stat(socket_path.c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(AdminFixture, LiveSocketIsRefused) {
    FakeHandler other;
    boost::asio::io_context io;
    AdminServer second(io, socket_path, other);
    auto s = second.listen();
    ASSERT_FALSE(s);
    EXPECT_TRUE(s.error().is(vmha::errc::busy)) << s.error().message;
    EXPECT_NE(s.error().message.find(socket_path.string()), std::string::npos);
    // The first server still owns and serves the path.
    LineClient c(socket_path);
    ASSERT_TRUE(c.send_json({{"version", 1}, {"verb", "status"}}));
    EXPECT_EQ(c.reply()["ok"], true);
}

TEST(AdminServer, StaleSocketIsReplaced) {
    TempDir dir;
    const fs::path path = dir / "admin.sock";
    {  // a socket file left by a dead server: bound, then closed without unlink
        const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
        ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
        ::close(fd);
    }
    ASSERT_TRUE(fs::exists(path));
    FakeHandler handler;
    LoopThread loop;
    AdminServer server(loop.io(), path, handler);
    auto s = server.listen();
    ASSERT_TRUE(s) << s.error().message;
    server.start();
    LineClient c(path);
    ASSERT_TRUE(c.send_json({{"version", 1}, {"verb", "status"}}));
    EXPECT_EQ(c.reply()["ok"], true);
    loop.call([&] { server.stop(); });
    loop.join();
    EXPECT_FALSE(fs::exists(path));  // removed at stop
}

TEST(AdminServer, PathThatIsNotASocketIsRefused) {
    TempDir dir;
    write_file(dir / "admin.sock", "precious");
    FakeHandler handler;
    boost::asio::io_context io;
    AdminServer server(io, dir / "admin.sock", handler);
    auto s = server.listen();
    ASSERT_FALSE(s);
    EXPECT_TRUE(s.error().is(vmha::errc::already_exists)) << s.error().message;
    EXPECT_EQ(read_file(dir / "admin.sock"), "precious");
}

}  // namespace
}  // namespace services_test
