#include "interval_lock.h"

#include <vmha/error.h>

namespace imagesync {

bool IntervalLock::conflicts_with_earlier(Ticket ticket) const {
    for (auto it = entries_.begin(); it != ticket; ++it) {
        if (it->begin < ticket->end && ticket->begin < it->end) return true;
    }
    return false;
}

bool IntervalLock::conflicts_with_any(std::uint64_t begin, std::uint64_t end) const {
    for (const Held& h : ranges_) {
        if (h.begin < end && begin < h.end) return true;
    }
    return false;
}

IntervalLock::Ticket IntervalLock::enqueue(std::uint64_t offset, std::uint64_t length) {
    const std::uint64_t end = length > UINT64_MAX - offset ? UINT64_MAX : offset + length;
    ranges_.reserve(ranges_.size() + 1);  // the one step below that may throw, before any change
    if (spare_.empty()) {
        entries_.emplace_back();
    } else {
        entries_.splice(entries_.end(), spare_, spare_.begin());
    }
    const Ticket t = std::prev(entries_.end());
    t->begin = offset;
    t->end = end;
    // Every entry held so far came earlier than this one.
    t->granted = !conflicts_with_any(offset, end);
    if (!t->granted) ++waiting_;
    t->slot = ranges_.size();
    ranges_.push_back(Held{offset, end, t});
    return t;
}

void IntervalLock::when_granted(Ticket ticket, std::function<void()> on_grant) {
    if (ticket->on_grant) vmha::internal_error("two waiters on one interval lock ticket");
    if (ticket->granted) {
        asio::post(executor_, std::move(on_grant));
        return;
    }
    ticket->on_grant = std::move(on_grant);
}

void IntervalLock::release(Ticket ticket) {
    ticket->on_grant = nullptr;  // a withdrawn ticket's waiter (enqueue() sets the rest)
    if (!ticket->granted) --waiting_;
    const std::size_t slot = ticket->slot;
    if (slot + 1 != ranges_.size()) {
        ranges_[slot] = ranges_.back();
        ranges_[slot].ticket->slot = slot;
    }
    ranges_.pop_back();
    spare_.splice(spare_.end(), entries_, ticket);
    if (waiting_ == 0) return;  // the common case: nothing overlapped, nothing waits
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
        if (it->granted || conflicts_with_earlier(it)) continue;
        it->granted = true;
        --waiting_;
        if (it->on_grant) asio::post(executor_, std::exchange(it->on_grant, {}));
    }
}

}  // namespace imagesync
