#include <thread>

#include <gtest/gtest.h>

#include <checkers/domain_events.h>

namespace vmha::checkers {
namespace {

hv::LifecycleEvent event(std::string domain, hv::EventKind kind) {
    return hv::LifecycleEvent{std::move(domain), kind, ""};
}

TEST(DomainEvents, DeliversOnlyToSubscribersOfTheDomain) {
    DomainEvents hub;
    int web1 = 0;
    int db1 = 0;
    auto a = hub.subscribe("web1", [&](const hv::LifecycleEvent&) { ++web1; });
    auto b = hub.subscribe("db1", [&](const hv::LifecycleEvent&) { ++db1; });
    hub.publish(event("web1", hv::EventKind::stopped));
    hub.publish(event("web1", hv::EventKind::started));
    hub.publish(event("other", hv::EventKind::started));
    EXPECT_EQ(web1, 2);
    EXPECT_EQ(db1, 0);
}

TEST(DomainEvents, NoDeliveryAfterTheSubscriptionEnds) {
    DomainEvents hub;
    int calls = 0;
    {
        auto s = hub.subscribe("web1", [&](const hv::LifecycleEvent&) { ++calls; });
        hub.publish(event("web1", hv::EventKind::crashed));
        DomainEvents::Subscription moved = std::move(s);
        hub.publish(event("web1", hv::EventKind::crashed));
        EXPECT_EQ(calls, 2);
    }
    hub.publish(event("web1", hv::EventKind::crashed));
    EXPECT_EQ(calls, 2);
}

TEST(DomainEvents, PublishFromAnotherThread) {
    DomainEvents hub;
    std::atomic<int> calls = 0;
    auto s = hub.subscribe("web1", [&](const hv::LifecycleEvent&) { ++calls; });
    std::thread t([&] {
        for (int i = 0; i < 100; ++i) hub.publish(event("web1", hv::EventKind::other));
    });
    t.join();
    EXPECT_EQ(calls.load(), 100);
}

}  // namespace
}  // namespace vmha::checkers
