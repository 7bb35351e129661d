// FakeHypervisor: states, events, fault injection and the call log.
#include <vmha/hypervisor/fake.h>

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace vmha::hv {
namespace {

using Op = FakeHypervisor::Op;

const char* const domain_xml = R"(<domain type='kvm'><name>web1</name><memory>65536</memory>
<os><type>hvm</type></os><devices><disk type='file' device='disk'><source file='/vm/web1.img'/>
<target dev='vda' bus='virtio'/></disk></devices></domain>)";

DomainSpec web1() {
    return {"web1", domain_xml, {{"/vm/web1.img", "", "/run/web1.sock", "web1", config::DiskFormat::raw}}};
}

std::vector<std::string> names(const std::vector<LifecycleEvent>& events) {
    std::vector<std::string> out;
    for (const LifecycleEvent& e : events) {
        out.push_back(e.domain + " " + std::string(to_string(e.kind)) + " " + e.detail);
    }
    return out;
}

TEST(FakeHypervisor, LifecycleWithQueuedEvents) {
    FakeHypervisor hv;
    std::vector<LifecycleEvent> seen;
    ASSERT_TRUE(hv.watch([&](const LifecycleEvent& e) { seen.push_back(e); }));

    EXPECT_EQ(hv.status("web1")->state, DomainState::absent);
    ASSERT_TRUE(hv.define(web1()));
    ASSERT_TRUE(hv.defined_xml("web1"));
    EXPECT_NE(hv.defined_xml("web1")->find("protocol=\"nbd\""), std::string::npos);
    EXPECT_EQ(hv.status("web1")->state, DomainState::shutoff);
    ASSERT_TRUE(hv.start("web1"));
    EXPECT_TRUE(hv.status("web1")->runs());
    EXPECT_TRUE(hv.start("web1"));  // running already: success
    EXPECT_TRUE(hv.ping_guest_agent("web1", std::chrono::seconds(1)));
    ASSERT_TRUE(hv.shutdown("web1", std::chrono::seconds(5)));
    EXPECT_EQ(hv.status("web1")->state, DomainState::shutoff);
    EXPECT_EQ(hv.status("web1")->reason, "shutdown");

    EXPECT_TRUE(seen.empty());  // queued until delivered
    EXPECT_EQ(hv.pending_events().size(), 4u);
    EXPECT_EQ(hv.deliver_events(), 4u);
    EXPECT_EQ(names(seen), (std::vector<std::string>{"web1 defined added", "web1 started booted",
                                                     "web1 shutting_down guest", "web1 stopped shutdown"}));
    EXPECT_EQ(hv.deliver_events(), 0u);

    ASSERT_TRUE(hv.undefine("web1"));
    EXPECT_EQ(hv.status("web1")->state, DomainState::absent);
    EXPECT_TRUE(hv.undefine("web1"));  // absent: success
    EXPECT_TRUE(hv.destroy("web1"));
    EXPECT_TRUE(hv.shutdown("web1", std::chrono::seconds(1)));
    EXPECT_TRUE(hv.start("web1").error().is(errc::not_found));
    EXPECT_TRUE(hv.resume("web1").error().is(errc::not_found));
}

TEST(FakeHypervisor, SynchronousDeliveryRunsTheHandlerInTheCall) {
    FakeHypervisor hv(FakeHypervisor::Delivery::synchronous);
    std::vector<LifecycleEvent> seen;
    ASSERT_TRUE(hv.watch([&](const LifecycleEvent& e) {
        seen.push_back(e);
        // The handler may call back into the fake.
        EXPECT_TRUE(hv.status(e.domain));
    }));
    ASSERT_TRUE(hv.define(web1()));
    ASSERT_TRUE(hv.start("web1"));
    hv.crash("web1");
    EXPECT_EQ(names(seen), (std::vector<std::string>{"web1 defined added", "web1 started booted",
                                                     "web1 stopped crashed"}));
    EXPECT_EQ(hv.status("web1")->reason, "crashed");
    EXPECT_TRUE(hv.pending_events().empty());
}

TEST(FakeHypervisor, DefineRefusesAMissingDisk) {
    FakeHypervisor hv;
    DomainSpec spec = web1();
    spec.disks[0].image_path = "/vm/other.img";
    Status s = hv.define(spec);
    ASSERT_FALSE(s);
    EXPECT_TRUE(s.error().is(errc::invalid_argument));
    EXPECT_EQ(hv.status("web1")->state, DomainState::absent);
}

TEST(FakeHypervisor, FailNextInjectsErrorsThenRecovers) {
    FakeHypervisor hv;
    ASSERT_TRUE(hv.define(web1()));
    hv.fail_next(Op::start, 2, errc::hypervisor_error);
    Status first = hv.start("web1");
    ASSERT_FALSE(first);
    EXPECT_TRUE(first.error().is(errc::hypervisor_error));
    EXPECT_NE(first.error().message.find("domain \"web1\""), std::string::npos);
    EXPECT_FALSE(hv.start("web1"));
    EXPECT_EQ(hv.status("web1")->state, DomainState::shutoff);  // nothing happened
    EXPECT_TRUE(hv.start("web1"));

    hv.fail_next(Op::status, 1, errc::connection_lost);
    EXPECT_TRUE(hv.status("web1").error().is(errc::connection_lost));
    EXPECT_TRUE(hv.status("web1"));

    std::vector<FakeHypervisor::Call> starts = hv.calls(Op::start);
    ASSERT_EQ(starts.size(), 3u);
    EXPECT_FALSE(starts[0].ok);
    EXPECT_EQ(starts[0].note, "hypervisor_error");
    EXPECT_TRUE(starts[2].ok);
    hv.clear_calls();
    EXPECT_TRUE(hv.calls().empty());
}

TEST(FakeHypervisor, PauseOnIoErrorAndResume) {
    FakeHypervisor hv;
    std::vector<LifecycleEvent> seen;
    ASSERT_TRUE(hv.watch([&](const LifecycleEvent& e) { seen.push_back(e); }));
    ASSERT_TRUE(hv.define(web1()));
    ASSERT_TRUE(hv.start("web1"));
    hv.pause_on_io_error("web1");
    EXPECT_TRUE(hv.status("web1")->paused_on_io_error());
    EXPECT_TRUE(hv.status("web1")->active());

    hv.pause_again_after_resume("web1", 1);
    ASSERT_TRUE(hv.resume("web1"));
    EXPECT_TRUE(hv.status("web1")->paused_on_io_error());  // QEMU had not reconnected yet
    ASSERT_TRUE(hv.resume("web1"));
    EXPECT_TRUE(hv.status("web1")->runs());
    EXPECT_TRUE(hv.resume("web1"));  // running already: success

    hv.deliver_events();
    EXPECT_EQ(names(seen), (std::vector<std::string>{
                               "web1 defined added", "web1 started booted", "web1 suspended ioerror",
                               "web1 resumed unpaused", "web1 suspended ioerror",
                               "web1 resumed unpaused"}));
    EXPECT_EQ(hv.calls(Op::resume)[0].note, "paused again on ioerror");
}

TEST(FakeHypervisor, HangingShutdownWaitsTheTimeoutThenDestroys) {
    FakeHypervisor hv;
    std::vector<std::chrono::milliseconds> slept;
    hv.set_sleep([&](std::chrono::milliseconds d) { slept.push_back(d); });
    std::vector<LifecycleEvent> seen;
    ASSERT_TRUE(hv.watch([&](const LifecycleEvent& e) { seen.push_back(e); }));
    ASSERT_TRUE(hv.define(web1()));
    ASSERT_TRUE(hv.start("web1"));
    hv.set_shutdown_hangs("web1", true);
    ASSERT_TRUE(hv.shutdown("web1", std::chrono::milliseconds(1500)));
    EXPECT_EQ(slept, (std::vector<std::chrono::milliseconds>{std::chrono::milliseconds(1500)}));
    EXPECT_EQ(hv.status("web1")->reason, "destroyed");
    EXPECT_EQ(hv.calls(Op::shutdown).at(0).note, "destroyed after timeout");
    hv.deliver_events();
    EXPECT_EQ(names(seen).back(), "web1 stopped destroyed");
}

TEST(FakeHypervisor, SilentGuestAgentTimesOut) {
    FakeHypervisor hv;
    ASSERT_TRUE(hv.define(web1()));
    EXPECT_TRUE(hv.ping_guest_agent("web1", std::chrono::seconds(1)).error().is(errc::hypervisor_error));
    ASSERT_TRUE(hv.start("web1"));
    hv.set_guest_agent_answers("web1", false);
    Status s = hv.ping_guest_agent("web1", std::chrono::milliseconds(300));
    ASSERT_FALSE(s);
    EXPECT_TRUE(s.error().is(errc::timeout));
    hv.set_guest_agent_answers("web1", true);
    EXPECT_TRUE(hv.ping_guest_agent("web1", std::chrono::milliseconds(300)));
}

TEST(FakeHypervisor, UndefiningARunningDomainLeavesItRunningUntilStopped) {
    FakeHypervisor hv;
    ASSERT_TRUE(hv.define(web1()));
    ASSERT_TRUE(hv.start("web1"));
    ASSERT_TRUE(hv.undefine("web1"));
    EXPECT_TRUE(hv.status("web1")->runs());
    EXPECT_FALSE(hv.defined_xml("web1"));
    hv.guest_powers_off("web1");
    EXPECT_EQ(hv.status("web1")->state, DomainState::absent);
}

TEST(FakeHypervisor, EventsWithoutAHandlerAreDropped) {
    FakeHypervisor hv;
    ASSERT_TRUE(hv.define(web1()));
    EXPECT_TRUE(hv.pending_events().empty());
}

}  // namespace
}  // namespace vmha::hv
