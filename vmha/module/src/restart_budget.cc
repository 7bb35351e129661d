#include <algorithm>

#include <vmha/module/restart_budget.h>

namespace vmha::module {

RestartBudget::RestartBudget(unsigned attempts, Clock::duration window)
    : attempts_(attempts), window_(window) {}

bool RestartBudget::try_consume(Clock::time_point now) {
    while (!made_.empty() && now - made_.front() >= window_) made_.pop_front();
    if (made_.size() >= attempts_) return false;
    made_.push_back(now);
    return true;
}

unsigned RestartBudget::used(Clock::time_point now) const {
    const auto in_window = std::count_if(made_.begin(), made_.end(),
                                         [&](Clock::time_point t) { return now - t < window_; });
    return static_cast<unsigned>(in_window);
}

}  // namespace vmha::module
