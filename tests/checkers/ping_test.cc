// The ping checker: the loopback addresses answer; in a private network namespace, an address
// nobody answers for and an address without a route fail.
#include <cerrno>
#include <cstring>
#include <thread>

#include <fcntl.h>
#include <sched.h>

#include "harness.h"

namespace vmha::checkers::test {
namespace {

config::Checker ping_config(config::Host host) {
    auto c = checker_config(config::CheckerKind::ping, "gw");
    c.host = std::move(host);
    return c;
}

bool have_ipv6_loopback() {
    std::ifstream in("/proc/net/if_inet6");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("00000000000000000000000000000001", 0) == 0) return true;
    }
    return false;
}

TEST(PingChecker, LoopbackAnswers) {
    if (::geteuid() != 0) GTEST_SKIP() << "raw ICMP sockets need root";
    Harness h;
    auto checker = make_or_fail(ping_config({config::Host::Kind::ipv4, "127.0.0.1"}), h.context());
    checker->start(h.recorder());
    ASSERT_TRUE(h.wait_reports(1));
    EXPECT_EQ(h.reports[0].verdict, Verdict::healthy) << h.reports[0].reason;
    EXPECT_EQ(h.reports[0].reason, "host \"127.0.0.1\" answers ping");
    h.run_for(std::chrono::milliseconds(200));  // several more checks, still healthy
    EXPECT_EQ(h.reports.size(), 1u);
}

TEST(PingChecker, Ipv6LoopbackAnswers) {
    if (::geteuid() != 0) GTEST_SKIP() << "raw ICMP sockets need root";
    if (!have_ipv6_loopback()) GTEST_SKIP() << "this node has no IPv6 loopback address";
    Harness h;
    auto checker = make_or_fail(ping_config({config::Host::Kind::ipv6, "::1"}), h.context());
    checker->start(h.recorder());
    ASSERT_TRUE(h.wait_reports(1));
    EXPECT_EQ(h.reports[0].verdict, Verdict::healthy) << h.reports[0].reason;
}

// In a private network namespace with one veth pair, 10.99.0.1/24 on d0: 10.99.0.2 is routed
// but nobody answers for it (ARP fails), and 198.51.100.1 has no route. The checker runs on a
// thread that entered the namespace (a socket belongs to its creator's namespace).
class PingInNamespace : public ::testing::Test {
  protected:
    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "raw ICMP sockets and namespaces need root";
        if (sh("ip -V") != 0) GTEST_SKIP() << "iproute2 (ip) is not installed";
        ns_ = "vmha-ckp-" + std::to_string(::getpid());
        ASSERT_EQ(sh("ip netns add " + ns_), 0);
        created_ = true;
        for (const char* cmd :
             {"link set lo up", "link add d0 type veth peer name p0",
              "addr add 10.99.0.1/24 dev d0", "link set p0 up", "link set d0 up"}) {
            ASSERT_EQ(sh("ip -n " + ns_ + " " + cmd), 0) << cmd;
        }
    }
    void TearDown() override {
        if (created_) sh("ip netns del " + ns_);
    }
    // The first verdict of a ping checker for `host`, run inside the namespace.
    CheckResult first_verdict(const std::string& host, std::chrono::milliseconds timeout) {
        CheckResult out;
        std::string error;
        std::thread t([&] {
            const int fd = ::open(("/run/netns/" + ns_).c_str(), O_RDONLY | O_CLOEXEC);
            if (fd < 0 || ::setns(fd, CLONE_NEWNET) != 0) {
                error = std::string("cannot enter the namespace: ") + std::strerror(errno);
                if (fd >= 0) ::close(fd);
                return;
            }
            ::close(fd);
            Harness h;
            auto config = ping_config({config::Host::Kind::ipv4, host});
            config.timeout = timeout;
            auto checker = make_or_fail(config, h.context());
            checker->start(h.recorder());
            if (!h.wait_reports(1))
                error = "no report within 20s";
            else
                out = h.reports[0];
        });
        t.join();
        EXPECT_TRUE(error.empty()) << error;
        return out;
    }
    static int sh(const std::string& command) {
        return std::system((command + " >/dev/null 2>&1").c_str());
    }

    std::string ns_;
    bool created_ = false;
};

TEST_F(PingInNamespace, LoopbackAnswersThere) {
    const CheckResult r = first_verdict("127.0.0.1", std::chrono::seconds(2));
    EXPECT_EQ(r.verdict, Verdict::healthy) << r.reason;
}

TEST_F(PingInNamespace, AnAddressNobodyAnswersForFailsAfterTheTimeout) {
    const CheckResult r = first_verdict("10.99.0.2", std::chrono::milliseconds(300));
    EXPECT_EQ(r.verdict, Verdict::failed);
    EXPECT_EQ(r.reason, "host \"10.99.0.2\" did not answer ping within 300ms");
}

TEST_F(PingInNamespace, AnAddressWithoutARouteFails) {
    const CheckResult r = first_verdict("198.51.100.1", std::chrono::seconds(2));
    EXPECT_EQ(r.verdict, Verdict::failed);
    EXPECT_EQ(r.reason, "host \"198.51.100.1\": ping could not be sent: Network is unreachable");
}

TEST(PingChecker, StopWithAPingInFlightReportsNothing) {
    if (::geteuid() != 0) GTEST_SKIP() << "raw ICMP sockets need root";
    Harness h;
    auto checker = make_or_fail(ping_config({config::Host::Kind::ipv4, "127.0.0.1"}), h.context());
    checker->start(h.recorder());  // the resolution is pending on the loop
    checker.reset();
    h.run_for(std::chrono::milliseconds(100));
    EXPECT_TRUE(h.reports.empty());
}

}  // namespace
}  // namespace vmha::checkers::test
