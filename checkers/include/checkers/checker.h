// The checker framework's boundary: what a module's state machine sees of a checker.
//
// A checker watches one thing a VM depends on (the VM itself through libvirt, a process, a
// custom command, a TCP service, an interface's link, the replication link) and reports each
// verdict with a reason. The module maps a failing verdict to the action configured for the
// checker (vmha::config::CheckerAction): restart the VM locally, fail over, or wait.
// Checkers run on the daemon's event loop; blocking work (commands, libvirt calls) runs off it.
// Implementations arrive with the vmhad issue; this header fixes the interface they share.
#pragma once

#include <chrono>
#include <functional>
#include <string>

namespace vmha::checkers {

enum class Verdict {
    healthy,  // the watched thing is as it should be
    failed,   // it is not; `reason` says how, e.g. "domain web1 shut off (crashed)"
    unknown,  // the check itself could not run (timeout, hypervisor unreachable)
};

struct CheckResult {
    Verdict verdict = Verdict::unknown;
    std::string reason;
    std::chrono::steady_clock::time_point at{};
};

class Checker {
public:
    using Report = std::function<void(const CheckResult&)>;

    virtual ~Checker() = default;
    virtual const std::string& name() const = 0;
    // Starts checking; every verdict (and every change of verdict) goes to `report`.
    virtual void start(Report report) = 0;
    // Stops checking; no report is made after stop() returns.
    virtual void stop() = 0;
};

}  // namespace vmha::checkers
