// The witness's lease table (pure: the caller says what time it is; no I/O).
//
// One entry per (pair, module). A lease is held while now < expires; only its holder may
// renew it; anybody (of the pair: the server checks) may take it once it is free or
// expired, which raises its epoch. A change that must survive a restart (a grant anew, a
// longer TTL, a release) is returned as a proposal: the server persists the table with it,
// then applies it, and only then replies.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <vmha/lease/lease.h>

namespace vmha::witness {

using lease::Duration;
using lease::LeaseKey;
using lease::LeaseState;
using lease::TimePoint;

// What the state file keeps of a lease: not its expiry, which means nothing after a restart.
struct Record {
    LeaseKey key;
    std::string holder;  // empty: released
    std::uint64_t epoch = 0;
    Duration ttl{0};
};

class LeaseTable {
  public:
    struct Entry {
        std::string holder;
        std::uint64_t epoch = 0;
        Duration ttl{0};
        TimePoint expires{};
    };
    struct Outcome {
        LeaseState state;             // the answer, as it will be once `change` is applied
        std::optional<Entry> change;  // to apply (after persisting when `persist`)
        bool persist = false;
        std::string event;  // for the log: "granted to hv1 (epoch 3)", empty for none
    };

    // After a restart: every lease with a holder is held for its full TTL from `now`.
    void load(const std::vector<Record>& records, TimePoint now);

    Outcome acquire(const LeaseKey& key, const std::string& node, Duration ttl,
                    TimePoint now) const;
    Outcome renew(const LeaseKey& key, const std::string& node, Duration ttl, TimePoint now) const;
    Outcome release(const LeaseKey& key, const std::string& node, TimePoint now) const;
    LeaseState query(const LeaseKey& key, TimePoint now) const;

    void apply(const LeaseKey& key, const Entry& entry);
    // The records to persist, with `change` applied to `key` (without applying it here).
    std::vector<Record> records_with(const LeaseKey& key, const Entry& change) const;
    std::vector<Record> records() const;
    std::size_t size() const { return entries_.size(); }

  private:
    using Map = std::map<std::pair<std::string, std::string>, Entry>;
    static std::pair<std::string, std::string> index(const LeaseKey& key) {
        return {key.pair, key.module};
    }
    const Entry* find(const LeaseKey& key) const;
    static LeaseState state_of(const Entry& e, TimePoint now);
    Map entries_;
};

}  // namespace vmha::witness
