// The tcp checker against a real listener on 127.0.0.1.
#include <boost/asio/ip/tcp.hpp>
#include <fmt/format.h>

#include "harness.h"

namespace vmha::checkers::test {
namespace {

using tcp = asio::ip::tcp;

TEST(TcpChecker, HealthyWhileListeningThenFailedWhenClosed) {
    Harness h;
    tcp::acceptor acceptor(h.io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    const std::uint16_t port = acceptor.local_endpoint().port();
    auto config = checker_config(config::CheckerKind::tcp, "web");
    config.host = config::Host{config::Host::Kind::ipv4, "127.0.0.1"};
    config.port = port;
    auto checker = make_or_fail(config, h.context());
    checker->start(h.recorder());
    ASSERT_TRUE(h.wait_reports(1));
    EXPECT_EQ(h.reports[0].verdict, Verdict::healthy) << h.reports[0].reason;
    acceptor.close();
    ASSERT_TRUE(h.wait_reports(2));
    EXPECT_EQ(h.reports[1].verdict, Verdict::failed);
    EXPECT_EQ(h.reports[1].reason, fmt::format("tcp \"127.0.0.1:{}\": Connection refused", port));
}

TEST(TcpChecker, ResolvesHostNames) {
    Harness h;
    tcp::acceptor acceptor(h.io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    auto config = checker_config(config::CheckerKind::tcp, "web");
    config.host = config::Host{config::Host::Kind::name, "localhost"};
    config.port = acceptor.local_endpoint().port();
    auto checker = make_or_fail(config, h.context());
    checker->start(h.recorder());
    ASSERT_TRUE(h.wait_reports(1));
    EXPECT_EQ(h.reports[0].verdict, Verdict::healthy) << h.reports[0].reason;
}

TEST(TcpChecker, StopWithAConnectionInFlightReportsNothing) {
    Harness h;
    tcp::acceptor acceptor(h.io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    auto config = checker_config(config::CheckerKind::tcp, "web");
    config.host = config::Host{config::Host::Kind::ipv4, "127.0.0.1"};
    config.port = acceptor.local_endpoint().port();
    auto checker = make_or_fail(config, h.context());
    checker->start(h.recorder());  // the connect is now pending on the loop
    checker.reset();
    h.run_for(std::chrono::milliseconds(100));
    EXPECT_TRUE(h.reports.empty());
}

TEST(TcpChecker, RefusesAMissingPort) {
    Harness h;
    auto config = checker_config(config::CheckerKind::tcp, "web");
    config.host = config::Host{config::Host::Kind::ipv4, "127.0.0.1"};
    auto made = make_checker(config, h.context());
    ASSERT_FALSE(made);
    EXPECT_EQ(made.error().message, "checker \"web\" (tcp): no port was given");
}

TEST(Factory, ReplicationIsRefusedAsUnsupported) {
    Harness h;
    auto made = make_checker(checker_config(config::CheckerKind::replication), h.context());
    ASSERT_FALSE(made);
    EXPECT_TRUE(made.error().is(errc::unsupported)) << made.error().message;
}

}  // namespace
}  // namespace vmha::checkers::test
