#include <checkers/domain_events.h>

namespace vmha::checkers {

DomainEvents::Subscription::Subscription(Subscription&& other) noexcept
    : hub_(other.hub_), id_(other.id_) {
    other.hub_ = nullptr;
}

DomainEvents::Subscription& DomainEvents::Subscription::operator=(Subscription&& other) noexcept {
    if (this != &other) {
        reset();
        hub_ = other.hub_;
        id_ = other.id_;
        other.hub_ = nullptr;
    }
    return *this;
}

void DomainEvents::Subscription::reset() {
    if (hub_ != nullptr) hub_->unsubscribe(id_);
    hub_ = nullptr;
}

DomainEvents::Subscription DomainEvents::subscribe(std::string domain, Handler handler) {
    std::lock_guard lock(mutex_);
    const std::uint64_t id = next_id_++;
    entries_.emplace(id, Entry{std::move(domain), std::move(handler)});
    return Subscription(this, id);
}

void DomainEvents::publish(const hv::LifecycleEvent& event) {
    std::lock_guard lock(mutex_);
    for (const auto& [id, entry] : entries_) {
        if (entry.domain == event.domain) entry.handler(event);
    }
}

void DomainEvents::unsubscribe(std::uint64_t id) {
    std::lock_guard lock(mutex_);
    entries_.erase(id);
}

}  // namespace vmha::checkers
