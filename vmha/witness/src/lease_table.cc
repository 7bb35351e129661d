#include "lease_table.h"

#include <fmt/format.h>

namespace vmha::witness {

void LeaseTable::load(const std::vector<Record>& records, TimePoint now) {
    entries_.clear();
    for (const auto& r : records) {
        entries_[index(r.key)] =
            Entry{r.holder, r.epoch, r.ttl, r.holder.empty() ? now : now + r.ttl};
    }
}

const LeaseTable::Entry* LeaseTable::find(const LeaseKey& key) const {
    const auto it = entries_.find(index(key));
    return it == entries_.end() ? nullptr : &it->second;
}

LeaseState LeaseTable::state_of(const Entry& e, TimePoint now) {
    if (e.holder.empty() || now >= e.expires)
        return LeaseState{{}, Duration(0), Duration(0), e.epoch};
    return LeaseState{e.holder, std::chrono::ceil<Duration>(e.expires - now), e.ttl, e.epoch};
}

LeaseTable::Outcome LeaseTable::acquire(const LeaseKey& key, const std::string& node, Duration ttl,
                                        TimePoint now) const {
    const Entry* e = find(key);
    if (e != nullptr && !e->holder.empty() && now < e->expires) {
        if (e->holder == node) return renew(key, node, ttl, now);
        return Outcome{state_of(*e, now), std::nullopt, false, {}};
    }
    const std::uint64_t epoch = (e != nullptr ? e->epoch : 0) + 1;
    Entry next{node, epoch, ttl, now + ttl};
    std::string event = e != nullptr && !e->holder.empty()
                            ? fmt::format("granted to {} (epoch {}) after {}'s lease expired", node,
                                          epoch, e->holder)
                            : fmt::format("granted to {} (epoch {})", node, epoch);
    return Outcome{state_of(next, now), next, true, std::move(event)};
}

LeaseTable::Outcome LeaseTable::renew(const LeaseKey& key, const std::string& node, Duration ttl,
                                      TimePoint now) const {
    const Entry* e = find(key);
    if (e == nullptr) return Outcome{LeaseState{}, std::nullopt, false, {}};
    if (e->holder != node || now >= e->expires)
        return Outcome{state_of(*e, now), std::nullopt, false, {}};
    Entry next = *e;
    next.expires = now + ttl;
    const bool longer = ttl > e->ttl;
    if (longer) next.ttl = ttl;  // the file keeps the longest TTL granted to this holder
    // A shorter TTL in a renewal is honoured now, but a restart keeps the longer one.
    return Outcome{LeaseState{node, ttl, ttl, e->epoch}, next, longer, {}};
}

LeaseTable::Outcome LeaseTable::release(const LeaseKey& key, const std::string& node,
                                        TimePoint now) const {
    const Entry* e = find(key);
    if (e == nullptr || e->holder != node) {
        return Outcome{e != nullptr ? state_of(*e, now) : LeaseState{}, std::nullopt, false, {}};
    }
    Entry next{{}, e->epoch, Duration(0), now};
    return Outcome{state_of(next, now), next, true, fmt::format("released by {}", node)};
}

LeaseState LeaseTable::query(const LeaseKey& key, TimePoint now) const {
    const Entry* e = find(key);
    return e != nullptr ? state_of(*e, now) : LeaseState{};
}

void LeaseTable::apply(const LeaseKey& key, const Entry& entry) {
    entries_[index(key)] = entry;
}

std::vector<Record> LeaseTable::records_with(const LeaseKey& key, const Entry& change) const {
    Map copy = entries_;
    copy[index(key)] = change;
    std::vector<Record> out;
    out.reserve(copy.size());
    for (const auto& [k, e] : copy)
        out.push_back(Record{{k.first, k.second}, e.holder, e.epoch, e.ttl});
    return out;
}

std::vector<Record> LeaseTable::records() const {
    std::vector<Record> out;
    for (const auto& [k, e] : entries_)
        out.push_back(Record{{k.first, k.second}, e.holder, e.epoch, e.ttl});
    return out;
}

}  // namespace vmha::witness
