// Local restarts allowed in a trailing window (SafeKit's maxloop: 3 in 24 h by default); once
// used up, a failing VM fails over to an UpToDate peer instead. Time is passed in, so the
// simulation's virtual clock drives it like the real one.
#pragma once

#include <chrono>
#include <deque>

namespace vmha::module {

class RestartBudget {
public:
    using TimePoint = std::chrono::steady_clock::time_point;
    using Duration = std::chrono::steady_clock::duration;

    RestartBudget(unsigned attempts, Duration window) : attempts_(attempts), window_(window) {}

    // Records an attempt if fewer than `attempts` were made in the trailing window.
    bool try_consume(TimePoint now) {
        expire(now);
        if (used_.size() >= attempts_) return false;
        used_.push_back(now);
        return true;
    }
    bool left(TimePoint now) {
        expire(now);
        return used_.size() < attempts_;
    }
    unsigned used(TimePoint now) {
        expire(now);
        return static_cast<unsigned>(used_.size());
    }
    unsigned attempts() const { return attempts_; }
    Duration window() const { return window_; }
    void reset() { used_.clear(); }

private:
    void expire(TimePoint now) {
        while (!used_.empty() && now - used_.front() >= window_) used_.pop_front();
    }
    unsigned attempts_;
    Duration window_;
    std::deque<TimePoint> used_;
};

}  // namespace vmha::module
