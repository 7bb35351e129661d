// The libvirt backend against libvirt's own test:///default driver (in-process, no daemon).
#include <vmha/hypervisor/libvirt.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <libvirt/libvirt.h>

namespace vmha::hv {
namespace {

using namespace std::chrono_literals;

constexpr const char* uri = "test:///default";

std::string domain_xml(const std::string& name) {
    return "<domain type='test'><name>" + name +
           "</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
           "<os><type arch='x86_64'>hvm</type></os><devices>"
           "<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
           "<source file='/var/lib/vm/" + name + ".img'/><target dev='vda' bus='virtio'/></disk>"
           "</devices></domain>";
}

DomainSpec spec(const std::string& name) {
    return {name, domain_xml(name),
            {{"/var/lib/vm/" + name + ".img", "", "/run/imagesync/" + name + ".sock", name,
              config::DiskFormat::raw}}};
}

// Collects events from the backend's thread; waits with a deadline.
class Events {
public:
    Hypervisor::EventHandler handler() {
        return [this](const LifecycleEvent& e) {
            std::lock_guard lock(mu_);
            events_.push_back(e);
            cv_.notify_all();
        };
    }
    bool wait_for(const std::string& domain, EventKind kind, const std::string& detail,
                  std::chrono::milliseconds deadline = 10s) {
        std::unique_lock lock(mu_);
        return cv_.wait_for(lock, deadline, [&] {
            for (const LifecycleEvent& e : events_) {
                if (e.domain == domain && e.kind == kind && e.detail == detail) return true;
            }
            return false;
        });
    }

private:
    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<LifecycleEvent> events_;
};

std::unique_ptr<Hypervisor> open_test_driver() {
    Result<std::unique_ptr<Hypervisor>> hv = make_libvirt_hypervisor(uri);
    if (!hv) ADD_FAILURE() << hv.error().message;
    return hv ? std::move(*hv) : nullptr;
}

TEST(LibvirtTestDriver, DefineStartShutdownDestroyWithEvents) {
    Events events;  // before the backend: its handler may run until the backend is gone
    auto hv = open_test_driver();
    ASSERT_TRUE(hv);
    ASSERT_TRUE(hv->watch(events.handler()));

    const std::string name = "vmha-lifecycle";
    EXPECT_EQ(hv->status(name)->state, DomainState::absent);
    Status defined = hv->define(spec(name));
    ASSERT_TRUE(defined) << defined.error().message;
    EXPECT_TRUE(events.wait_for(name, EventKind::defined, "added"));

    // The definition carries the NBD disk and autostart is off (checked on another connection
    // to the same in-process test driver).
    {
        virConnectPtr conn = virConnectOpen(uri);
        ASSERT_NE(conn, nullptr);
        virDomainPtr domain = virDomainLookupByName(conn, name.c_str());
        ASSERT_NE(domain, nullptr);
        char* xml = virDomainGetXMLDesc(domain, 0);
        ASSERT_NE(xml, nullptr);
        EXPECT_NE(std::string(xml).find("protocol='nbd'"), std::string::npos) << xml;
        free(xml);  // NOLINT
        int autostart = -1;
        EXPECT_EQ(virDomainGetAutostart(domain, &autostart), 0);
        EXPECT_EQ(autostart, 0);
        virDomainFree(domain);
        virConnectClose(conn);
    }

    DomainStatus s = *hv->status(name);
    EXPECT_EQ(s.state, DomainState::shutoff);
    ASSERT_TRUE(hv->start(name));
    EXPECT_TRUE(events.wait_for(name, EventKind::started, "booted"));
    s = *hv->status(name);
    EXPECT_EQ(s.state, DomainState::running);
    EXPECT_EQ(s.reason, "booted");
    EXPECT_TRUE(hv->start(name));  // running already: success

    ASSERT_TRUE(hv->shutdown(name, 5s));
    EXPECT_TRUE(events.wait_for(name, EventKind::stopped, "shutdown"));
    s = *hv->status(name);
    EXPECT_EQ(s.state, DomainState::shutoff);
    EXPECT_EQ(s.reason, "shutdown");
    EXPECT_TRUE(hv->shutdown(name, 1s));  // shut off already

    ASSERT_TRUE(hv->start(name));
    ASSERT_TRUE(hv->destroy(name));
    EXPECT_TRUE(events.wait_for(name, EventKind::stopped, "destroyed"));
    s = *hv->status(name);
    EXPECT_EQ(s.state, DomainState::shutoff);
    EXPECT_EQ(s.reason, "destroyed");
    EXPECT_TRUE(hv->destroy(name));  // shut off already

    ASSERT_TRUE(hv->undefine(name));
    EXPECT_TRUE(events.wait_for(name, EventKind::undefined, "removed"));
    EXPECT_EQ(hv->status(name)->state, DomainState::absent);
}

TEST(LibvirtTestDriver, AbsentDomains) {
    auto hv = open_test_driver();
    ASSERT_TRUE(hv);
    EXPECT_TRUE(hv->undefine("vmha-nope"));
    EXPECT_TRUE(hv->destroy("vmha-nope"));
    EXPECT_TRUE(hv->shutdown("vmha-nope", 1s));
    Status started = hv->start("vmha-nope");
    ASSERT_FALSE(started);
    EXPECT_TRUE(started.error().is(errc::not_found));
    EXPECT_NE(started.error().message.find("domain \"vmha-nope\""), std::string::npos);
    EXPECT_TRUE(hv->resume("vmha-nope").error().is(errc::not_found));
}

TEST(LibvirtTestDriver, ErrorsQuoteLibvirt) {
    auto hv = open_test_driver();
    ASSERT_TRUE(hv);
    // Our own check: the replicated disk is missing from the XML.
    DomainSpec missing = spec("vmha-missing");
    missing.disks[0].image_path = "/elsewhere.img";
    Status s = hv->define(missing);
    ASSERT_FALSE(s);
    EXPECT_TRUE(s.error().is(errc::invalid_argument));
    EXPECT_EQ(hv->status("vmha-missing")->state, DomainState::absent);

    // libvirt's check: an unknown memory unit.
    DomainSpec bad = spec("vmha-bad");
    bad.xml.replace(bad.xml.find("unit='MiB'"), 10, "unit='XiB'");
    s = hv->define(bad);
    ASSERT_FALSE(s);
    EXPECT_NE(s.error().message.find("domain \"vmha-bad\": cannot define it: libvirt: \""),
              std::string::npos)
        << s.error().message;

    // Resuming a domain that does not run is refused by libvirt.
    ASSERT_TRUE(hv->define(spec("vmha-idle")));
    s = hv->resume("vmha-idle");
    ASSERT_FALSE(s);
    EXPECT_TRUE(s.error().is(errc::hypervisor_error)) << s.error().message;
    EXPECT_NE(s.error().message.find("libvirt: \""), std::string::npos) << s.error().message;
    // The test driver has no guest agent.
    EXPECT_FALSE(hv->ping_guest_agent("vmha-idle", 1s));
    ASSERT_TRUE(hv->undefine("vmha-idle"));
}

TEST(LibvirtTestDriver, UnreachableUriIsConnectionLost) {
    Result<std::unique_ptr<Hypervisor>> hv =
        make_libvirt_hypervisor("qemu:///system?socket=/nonexistent/vmha-test/libvirt-sock");
    ASSERT_FALSE(hv);
    EXPECT_TRUE(hv.error().is(errc::connection_lost));
    EXPECT_NE(hv.error().message.find("/nonexistent/vmha-test/libvirt-sock"), std::string::npos)
        << hv.error().message;
}

TEST(LibvirtTestDriver, SeveralBackendsShareTheEventLoop) {
    Events events;
    {
        Events ignored;
        auto first = open_test_driver();
        ASSERT_TRUE(first);
        ASSERT_TRUE(first->watch(ignored.handler()));
    }  // the loop stops with the last backend and starts again with the next one
    auto hv = open_test_driver();
    auto other = open_test_driver();
    ASSERT_TRUE(hv && other);
    ASSERT_TRUE(hv->watch(events.handler()));
    ASSERT_TRUE(other->define(spec("vmha-shared")));
    EXPECT_TRUE(events.wait_for("vmha-shared", EventKind::defined, "added"));
    other.reset();
    ASSERT_TRUE(hv->undefine("vmha-shared"));
    EXPECT_TRUE(events.wait_for("vmha-shared", EventKind::undefined, "removed"));
}

TEST(LibvirtTestDriver, ConcurrentCallsFromSeveralThreads) {
    Events events;  // before the backend: its handler may run until the backend is gone
    auto hv = open_test_driver();
    ASSERT_TRUE(hv);
    ASSERT_TRUE(hv->watch(events.handler()));
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            const std::string name = "vmha-thread-" + std::to_string(t);
            for (int i = 0; i < 20; ++i) {
                if (!hv->define(spec(name)) || !hv->start(name) || !hv->status(name)->runs() ||
                    !hv->destroy(name) || !hv->undefine(name)) {
                    ++failures;
                }
            }
        });
    }
    for (std::thread& thread : threads) thread.join();
    EXPECT_EQ(failures.load(), 0);
    EXPECT_TRUE(events.wait_for("vmha-thread-3", EventKind::undefined, "removed"));
}

}  // namespace
}  // namespace vmha::hv
