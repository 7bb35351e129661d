// The health check over real HTTP: curl for the routes and the allow list (source address
// 127.0.0.2 vs 127.0.0.1), a Beast client for keep-alive, and raw sockets for bad requests.
#include <arpa/inet.h>

#include <boost/asio/connect.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <vmha/services/health_server.h>

#include "harness.h"

namespace services_test {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
using tcp = boost::asio::ip::tcp;
using vmha::services::HealthServer;

std::optional<bool> fake_states(const std::string& module) {
    if (module == "web1") return true;   // PRIM
    if (module == "db1") return false;   // SECOND
    return std::nullopt;
}

class HealthTest : public ::testing::Test {
protected:
    void SetUp() override {
        server = std::make_unique<HealthServer>(loop.io(), fake_states);
        auto s = server->listen("127.0.0.1", 0);
        ASSERT_TRUE(s) << s.error().message;
        auto allow = vmha::config::parse_cidr("127.0.0.1/32");
        ASSERT_TRUE(allow);
        s = server->listen("127.0.0.1", 0, {*allow});
        ASSERT_TRUE(s) << s.error().message;
        server->start();
        port = server->endpoints().at(0).port();
        restricted_port = server->endpoints().at(1).port();
    }
    void TearDown() override {
        loop.call([&] { server->stop(); });
        loop.join();
        server.reset();
    }

    struct Curl {
        int exit_code = -1;
        int status = 0;
        std::string body;
        std::string output;
    };
    // curl prints the body, then a marker line with the status code.
    Curl curl(const std::string& path, std::vector<std::string> extra = {}, std::uint16_t on = 0) {
        std::vector<std::string> argv{"curl", "-sS", "--max-time", "20", "-w", "\n@@%{http_code}"};
        argv.insert(argv.end(), extra.begin(), extra.end());
        argv.push_back(fmt::format("http://127.0.0.1:{}{}", on ? on : port, path));
        const auto r = run_tool(argv, dir.path(), std::chrono::seconds(30));
        Curl c;
        c.exit_code = r.exit_code;
        c.output = r.output;
        const auto marker = r.output.rfind("\n@@");
        if (marker != std::string::npos) {
            c.body = r.output.substr(0, marker);
            c.status = std::atoi(r.output.c_str() + marker + 3);
        }
        return c;
    }

    TempDir dir;
    LoopThread loop;
    std::unique_ptr<HealthServer> server;
    std::uint16_t port = 0;
    std::uint16_t restricted_port = 0;
};

TEST_F(HealthTest, HealthRoute) {
    IMAGESYNC_REQUIRE_TOOL("curl");
    auto c = curl("/health/web1");
    EXPECT_EQ(c.status, 200) << c.output;
    EXPECT_EQ(c.body, "OK\n");
    c = curl("/health/db1");
    EXPECT_EQ(c.status, 503) << c.output;
    EXPECT_EQ(c.body, "NOK\n");
    c = curl("/health/nosuch");
    EXPECT_EQ(c.status, 404) << c.output;
    c = curl("/health/web1?probe=lb");
    EXPECT_EQ(c.status, 200) << c.output;
    c = curl("/health/");
    EXPECT_EQ(c.status, 404) << c.output;
}

TEST_F(HealthTest, SafeKitReadyTxtRoute) {
    IMAGESYNC_REQUIRE_TOOL("curl");
    auto c = curl("/var/modules/web1/ready.txt");
    EXPECT_EQ(c.status, 200) << c.output;
    EXPECT_EQ(c.body, "OK");
    EXPECT_EQ(curl("/var/modules/db1/ready.txt").status, 404);
    EXPECT_EQ(curl("/var/modules/nosuch/ready.txt").status, 404);
    EXPECT_EQ(curl("/var/modules/web1/other.txt").status, 404);
    EXPECT_EQ(curl("/var/modules/a/b/ready.txt").status, 404);
}

TEST_F(HealthTest, MethodsAndOtherPaths) {
    IMAGESYNC_REQUIRE_TOOL("curl");
    EXPECT_EQ(curl("/").status, 404);
    EXPECT_EQ(curl("/healthz").status, 404);
    const auto post = curl("/health/web1", {"-X", "POST", "-d", "x=1"});
    EXPECT_EQ(post.status, 405) << post.output;
    EXPECT_EQ(curl("/health/web1", {"-X", "DELETE"}).status, 405);
    const auto head = curl("/health/db1", {"-I"});
    EXPECT_EQ(head.status, 503) << head.output;
    EXPECT_NE(head.output.find("Content-Length: 4"), std::string::npos) << head.output;
    EXPECT_EQ(head.output.find("NOK"), std::string::npos) << "HEAD has no body:\n" << head.output;
}

TEST_F(HealthTest, AllowListBySourceAddress) {
    IMAGESYNC_REQUIRE_TOOL("curl");
    auto c = curl("/health/web1", {}, restricted_port);
    EXPECT_EQ(c.status, 200) << c.output;
    c = curl("/health/web1", {"--interface", "127.0.0.2"}, restricted_port);
    EXPECT_EQ(c.status, 403) << c.output;
    c = curl("/var/modules/web1/ready.txt", {"--interface", "127.0.0.2"}, restricted_port);
    EXPECT_EQ(c.status, 403) << c.output;
    // The endpoint without an allow list takes everyone.
    c = curl("/health/web1", {"--interface", "127.0.0.2"});
    EXPECT_EQ(c.status, 200) << c.output;
}

// A Beast client: several requests on one kept-alive connection.
TEST_F(HealthTest, KeepAlive) {
    boost::asio::io_context io;
    beast::tcp_stream stream(io);
    stream.expires_after(20s);
    stream.connect(tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), port));
    beast::flat_buffer buffer;
    for (const auto& [path, status] : std::vector<std::pair<std::string, unsigned>>{
             {"/health/web1", 200}, {"/health/db1", 503}, {"/var/modules/web1/ready.txt", 200},
             {"/nothing", 404}, {"/health/web1", 200}}) {
        http::request<http::empty_body> req{http::verb::get, path, 11};
        req.set(http::field::host, "127.0.0.1");
        req.keep_alive(true);
        stream.expires_after(20s);
        http::write(stream, req);
        http::response<http::string_body> res;
        http::read(stream, buffer, res);
        EXPECT_EQ(res.result_int(), status) << path;
        EXPECT_TRUE(res.keep_alive()) << path;
    }
    // Connection: close is honoured.
    http::request<http::empty_body> last{http::verb::get, "/health/web1", 11};
    last.keep_alive(false);
    http::write(stream, last);
    http::response<http::string_body> res;
    http::read(stream, buffer, res);
    EXPECT_FALSE(res.keep_alive());
    beast::error_code ec;
    http::read(stream, buffer, res, ec);
    EXPECT_EQ(ec, http::error::end_of_stream);
}

// A garbage request and an oversized header close only their own connection.
TEST_F(HealthTest, BadRequestClosesOnlyItsConnection) {
    boost::asio::io_context io;
    beast::tcp_stream good(io);
    good.expires_after(20s);
    good.connect(tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), port));

    for (const std::string& bad : {std::string("GARBAGE\r\n\r\n"),
                                  "GET /health/web1 HTTP/1.1\r\nX-Big: " + std::string(16 * 1024, 'a') +
                                      "\r\n\r\n"}) {
        tcp::socket raw(io);
        raw.connect(tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), port));
        boost::asio::write(raw, boost::asio::buffer(bad));
        std::string answer;
        beast::error_code ec;
        char buf[1024];
        for (;;) {  // the server answers 400 and closes: read to EOF
            const auto n = raw.read_some(boost::asio::buffer(buf), ec);
            if (ec) break;
            answer.append(buf, n);
        }
        EXPECT_TRUE(ec == boost::asio::error::eof || ec == boost::asio::error::connection_reset) << ec.message();
        EXPECT_NE(answer.find("400"), std::string::npos) << answer;
    }
    // The first connection still works.
    http::request<http::empty_body> req{http::verb::get, "/health/web1", 11};
    http::write(good, req);
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    http::read(good, buffer, res);
    EXPECT_EQ(res.result_int(), 200u);
    EXPECT_EQ(res.body(), "OK\n");
}

TEST(HealthServer, ListenErrors) {
    boost::asio::io_context io;
    HealthServer server(io, fake_states);
    auto s = server.listen("not-an-ip", 0);
    ASSERT_FALSE(s);
    EXPECT_TRUE(s.error().is(vmha::errc::invalid_argument));
    ASSERT_TRUE(server.listen("127.0.0.1", 0));
    const auto taken = server.endpoints().at(0).port();
    HealthServer other(io, fake_states);
    s = other.listen("127.0.0.1", taken);
    ASSERT_FALSE(s);
    EXPECT_NE(s.error().message.find(std::to_string(taken)), std::string::npos) << s.error().message;
    EXPECT_EQ(vmha::services::safekit_health_port, 9010);
}

}  // namespace
}  // namespace services_test
