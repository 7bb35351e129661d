// RestartBudget: how many local restarts a module may still attempt (SafeKit's default is 3
// in 24 h); once spent, the module fails over to an UpToDate peer instead.
//
// Pure: the clock is passed in, so the deterministic simulation can use virtual time. An
// attempt made at time t counts while now - t < window. Not thread-safe; owned by its module.
#pragma once

#include <chrono>
#include <deque>

namespace vmha::module {

class RestartBudget {
  public:
    using Clock = std::chrono::steady_clock;

    RestartBudget(unsigned attempts, Clock::duration window);

    // Records an attempt at `now` and returns true when fewer than `attempts` were made in the
    // trailing window; otherwise records nothing and returns false.
    bool try_consume(Clock::time_point now);
    // Attempts made in the trailing window ending at `now`.
    unsigned used(Clock::time_point now) const;
    // Attempts still allowed at `now`.
    unsigned remaining(Clock::time_point now) const { return attempts_ - used(now); }
    // Forgets every attempt (an operator restarted the module).
    void reset() { made_.clear(); }

    unsigned attempts() const { return attempts_; }
    Clock::duration window() const { return window_; }

  private:
    unsigned attempts_;
    Clock::duration window_;
    std::deque<Clock::time_point> made_;  // oldest first
};

}  // namespace vmha::module
