// The interface checker: lo and a missing name on this node's sysfs, and a dummy interface
// (one end of a veth pair) set up and down in a private network namespace whose sysfs the test
// mounts privately.
#include <cerrno>
#include <cstring>
#include <thread>

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>

#include "harness.h"
#include "probes.h"

namespace vmha::checkers::test {
namespace {

int sh(const std::string& command) {
    return std::system((command + " >/dev/null 2>&1").c_str());
}

TEST(InterfaceChecker, LoopbackIsUpAndAMissingInterfaceFails) {
    EXPECT_EQ(detail::judge_interface("/sys", "lo").verdict, Verdict::healthy);
    const CheckResult missing = detail::judge_interface("/sys", "vmhanosuch0");
    EXPECT_EQ(missing.verdict, Verdict::failed);
    EXPECT_EQ(missing.reason, "interface \"vmhanosuch0\" does not exist on this node");
}

TEST(InterfaceChecker, RefusesAPathAsInterfaceName) {
    Harness h;
    auto config = checker_config(config::CheckerKind::interface, "link");
    config.interface = "../../etc";
    auto made = make_checker(config, h.context());
    ASSERT_FALSE(made);
    EXPECT_TRUE(made.error().is(errc::invalid_argument));
}

// A network namespace with a veth pair d0/p0 (p0 up: d0 has a carrier once it is up itself),
// and the namespace's sysfs mounted at `sysfs_`.
class VethInterface : public ::testing::Test {
  protected:
    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "creating a network namespace needs root";
        if (sh("ip -V") != 0) GTEST_SKIP() << "iproute2 (ip) is not installed";
        ns_ = "vmha-ck-" + std::to_string(::getpid());
        ASSERT_EQ(sh("ip netns add " + ns_), 0) << "ip netns add " << ns_;
        created_ = true;
        ASSERT_EQ(sh("ip -n " + ns_ + " link add d0 type veth peer name p0"), 0);
        ASSERT_EQ(sh("ip -n " + ns_ + " link set p0 up"), 0);
        sysfs_ = (dir_.path / "sys").string();
        std::filesystem::create_directory(sysfs_);
        // sysfs shows the network namespace of the task that mounts it: mount from a thread
        // that entered the namespace (threads share the mount namespace with the test).
        std::string error;
        std::thread t([&] {
            const int fd = ::open(("/run/netns/" + ns_).c_str(), O_RDONLY | O_CLOEXEC);
            if (fd < 0 || ::setns(fd, CLONE_NEWNET) != 0) {
                error = std::string("cannot enter the namespace: ") + std::strerror(errno);
            } else if (::mount("sysfs", sysfs_.c_str(), "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                               nullptr) != 0) {
                error = std::string("cannot mount sysfs: ") + std::strerror(errno);
            }
            if (fd >= 0) ::close(fd);
        });
        t.join();
        ASSERT_TRUE(error.empty()) << error;
        mounted_ = true;
    }
    void TearDown() override {
        if (mounted_) ::umount2(sysfs_.c_str(), MNT_DETACH);
        if (created_) sh("ip netns del " + ns_);
    }
    int link(const std::string& dev, const std::string& updown) {
        return sh("ip -n " + ns_ + " link set " + dev + " " + updown);
    }

    TempDir dir_;
    std::string ns_;
    std::string sysfs_;
    bool created_ = false;
    bool mounted_ = false;
};

TEST_F(VethInterface, FollowsTheLinkUpAndDown) {
    Harness h;
    CheckerContext ctx = h.context();
    ctx.sysfs = sysfs_;
    auto config = checker_config(config::CheckerKind::interface, "link");
    config.interface = "d0";
    auto checker = make_or_fail(config, ctx);
    checker->start(h.recorder());
    ASSERT_TRUE(h.wait_reports(1));
    EXPECT_EQ(h.reports[0].verdict, Verdict::failed) << "created down";
    EXPECT_EQ(h.reports[0].reason,
              "interface \"d0\" link is down (operstate \"down\", carrier "
              "unreadable)");
    ASSERT_EQ(link("d0", "up"), 0);
    ASSERT_TRUE(h.wait_reports(2));
    EXPECT_EQ(h.reports[1].verdict, Verdict::healthy) << h.reports[1].reason;
    EXPECT_EQ(h.reports[1].reason, "interface \"d0\" link is up");
    ASSERT_EQ(link("p0", "down"), 0);  // the other end goes: d0 loses its carrier
    ASSERT_TRUE(h.wait_reports(3));
    EXPECT_EQ(h.reports[2].verdict, Verdict::failed);
    EXPECT_NE(h.reports[2].reason.find("link is down"), std::string::npos) << h.reports[2].reason;
    ASSERT_EQ(link("p0", "up"), 0);
    ASSERT_TRUE(h.wait_reports(4));
    EXPECT_EQ(h.reports[3].verdict, Verdict::healthy) << h.reports[3].reason;
    ASSERT_EQ(link("d0", "down"), 0);
    ASSERT_TRUE(h.wait_reports(5));
    EXPECT_EQ(h.reports[4].verdict, Verdict::failed);
    ASSERT_EQ(sh("ip -n " + ns_ + " link del d0"), 0);
    EXPECT_EQ(detail::judge_interface(sysfs_, "d0").reason,
              "interface \"d0\" does not exist on this node");
}

}  // namespace
}  // namespace vmha::checkers::test
