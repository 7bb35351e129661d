// recover_paused_guest() against the fake, on a virtual clock.
#include <vmha/hypervisor/recover.h>

#include <gtest/gtest.h>

#include <vmha/hypervisor/fake.h>

namespace vmha::hv {
namespace {

using namespace std::chrono_literals;
using Op = FakeHypervisor::Op;

class RecoverTest : public ::testing::Test {
protected:
    void SetUp() override {
        const char* xml = "<domain type='kvm'><name>web1</name><memory>65536</memory>"
                          "<os><type>hvm</type></os></domain>";
        ASSERT_TRUE(hv.define({"web1", xml, {}}));
        ASSERT_TRUE(hv.start("web1"));
        options.now = [this] { return clock; };
        options.sleep = [this](std::chrono::milliseconds d) { clock += d; };
    }

    std::size_t resumes() { return hv.calls(Op::resume).size(); }

    FakeHypervisor hv;
    std::chrono::steady_clock::time_point clock{};
    RecoverOptions options;
};

TEST_F(RecoverTest, ResumesAgainUntilItStaysRunning) {
    hv.pause_on_io_error("web1");
    hv.pause_again_after_resume("web1", 2);
    ASSERT_TRUE(recover_paused_guest(hv, "web1", 30s, options));
    EXPECT_TRUE(hv.status("web1")->runs());
    EXPECT_EQ(resumes(), 3u);
    // Two failed attempts with backoff 200 + 400 ms (each after a poll), then a 1 s settle.
    EXPECT_GE(clock - std::chrono::steady_clock::time_point{}, 1600ms);
}

TEST_F(RecoverTest, OneResumeIsEnoughWhenItStays) {
    hv.pause_on_io_error("web1");
    ASSERT_TRUE(recover_paused_guest(hv, "web1", 5s, options));
    EXPECT_EQ(resumes(), 1u);
}

TEST_F(RecoverTest, RunningGuestIsOnlyWatched) {
    ASSERT_TRUE(recover_paused_guest(hv, "web1", 5s, options));
    EXPECT_EQ(resumes(), 0u);
}

TEST_F(RecoverTest, TimesOutWhenItKeepsPausing) {
    hv.pause_on_io_error("web1");
    hv.pause_again_after_resume("web1", 1000);
    Status s = recover_paused_guest(hv, "web1", 10s, options);
    ASSERT_FALSE(s);
    EXPECT_TRUE(s.error().is(errc::timeout));
    EXPECT_NE(s.error().message.find("domain \"web1\": did not stay running"), std::string::npos)
        << s.error().message;
    EXPECT_LE(clock - std::chrono::steady_clock::time_point{}, 10s);
    EXPECT_GE(resumes(), 5u);
    EXPECT_TRUE(hv.status("web1")->paused_on_io_error());
}

TEST_F(RecoverTest, RetriesAFailingResume) {
    hv.pause_on_io_error("web1");
    hv.fail_next(Op::resume, 2, errc::hypervisor_error);
    ASSERT_TRUE(recover_paused_guest(hv, "web1", 10s, options));
    EXPECT_EQ(resumes(), 3u);
}

TEST_F(RecoverTest, LeavesShutOffAndAbsentDomainsAlone) {
    ASSERT_TRUE(hv.destroy("web1"));
    Status s = recover_paused_guest(hv, "web1", 5s, options);
    ASSERT_FALSE(s);
    EXPECT_TRUE(s.error().is(errc::hypervisor_error));
    EXPECT_EQ(s.error().message, "domain \"web1\": is shutoff (destroyed), not paused: nothing to resume");
    EXPECT_TRUE(recover_paused_guest(hv, "nope", 5s, options).error().is(errc::not_found));
    EXPECT_EQ(resumes(), 0u);
}

TEST_F(RecoverTest, StatusFailureIsReturned) {
    hv.pause_on_io_error("web1");
    hv.fail_next(Op::status, 1, errc::connection_lost);
    EXPECT_TRUE(recover_paused_guest(hv, "web1", 5s, options).error().is(errc::connection_lost));
}

}  // namespace
}  // namespace vmha::hv
