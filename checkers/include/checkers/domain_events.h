// DomainEvents: fans a hypervisor's lifecycle events out to the vm checkers, by domain name.
//
// Hypervisor::watch() takes one handler per backend; the daemon gives it this hub's publish()
// and passes the hub to make_checker() in CheckerContext::events. Each vm checker subscribes
// for its module's domain while it runs and re-checks at once when an event arrives.
//
// Thread-safe. publish() runs the matching handlers on the caller's thread (the backend's
// event thread) under the hub's lock: handlers must only post work elsewhere, never block
// and never subscribe or unsubscribe. After a Subscription is destroyed or reset, its handler
// is not called again. The hub must outlive its subscriptions.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>

#include <vmha/hypervisor/hypervisor.h>

namespace vmha::checkers {

class DomainEvents {
  public:
    using Handler = std::function<void(const hv::LifecycleEvent&)>;

    // Move-only; unsubscribes when destroyed or reset.
    class Subscription {
      public:
        Subscription() = default;
        Subscription(Subscription&& other) noexcept;
        Subscription& operator=(Subscription&& other) noexcept;
        Subscription(const Subscription&) = delete;
        Subscription& operator=(const Subscription&) = delete;
        ~Subscription() { reset(); }
        void reset();

      private:
        friend class DomainEvents;
        Subscription(DomainEvents* hub, std::uint64_t id) : hub_(hub), id_(id) {}
        DomainEvents* hub_ = nullptr;
        std::uint64_t id_ = 0;
    };

    DomainEvents() = default;
    DomainEvents(const DomainEvents&) = delete;
    DomainEvents& operator=(const DomainEvents&) = delete;

    [[nodiscard]] Subscription subscribe(std::string domain, Handler handler);
    // Calls every handler subscribed to event.domain. Any thread.
    void publish(const hv::LifecycleEvent& event);

  private:
    void unsubscribe(std::uint64_t id);

    struct Entry {
        std::string domain;
        Handler handler;
    };
    std::mutex mutex_;
    std::uint64_t next_id_ = 1;
    std::map<std::uint64_t, Entry> entries_;
};

}  // namespace vmha::checkers
