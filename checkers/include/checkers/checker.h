// The checker framework's boundary: what a module's state machine sees of a checker.
//
// A checker watches one thing a VM depends on (the VM itself through libvirt, a process, a
// custom command, a TCP service, an interface's link) and reports each verdict with a reason.
// The module maps a failing verdict to the action configured for the checker
// (vmha::config::CheckerAction): restart the VM locally, fail over, or wait; `cause` tells it
// when a failure needs something else (a VM paused on an I/O error is resumed, never
// restarted). Checkers are made by make_checker() (factory.h) and live on the module's
// executor: start(), stop(), suspend() and resume() are called there and every report is
// made there. Blocking work (commands' waits, libvirt calls, /proc and /sys reads) runs off it.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>

namespace vmha::checkers {

enum class Verdict {
    healthy,  // the watched thing is as it should be
    failed,   // it is not; `reason` says how, e.g. "domain "web1" shut off (crashed)"
    unknown,  // the check itself could not run (hypervisor unreachable), or a failure has not
              // yet been seen the configured number of times in a row
};

// What kind of failure a vm checker saw; `none` for every other checker and for healthy.
enum class Cause {
    none,
    stopped,             // the domain is shut off, crashed, shutting down or not defined
    paused,              // paused for a reason other than an I/O error (and not by vmha)
    paused_on_io_error,  // paused by QEMU after a disk error: resume once imagesync is back,
                         // never restart
    hung,                // running, but the QEMU guest agent does not answer
};

struct CheckResult {
    Verdict verdict = Verdict::unknown;
    std::string reason;
    std::chrono::steady_clock::time_point at{};
    Cause cause = Cause::none;
};

std::string_view to_string(Verdict verdict);  // "healthy", "failed", "unknown"
std::string_view to_string(Cause cause);      // "none", "stopped", "paused", ...

class Checker {
  public:
    using Report = std::function<void(const CheckResult&)>;

    virtual ~Checker() = default;
    virtual const std::string& name() const = 0;
    // Starts checking. The first verdict is reported after the first check, then every change
    // of verdict or cause.
    virtual void start(Report report) = 0;
    // Stops checking; no report is made after stop() returns. Idempotent.
    virtual void stop() = 0;
    // While suspended (the module stops or starts the VM on purpose) results are discarded and
    // nothing is reported; resume() checks at once and reports the next verdict whatever it
    // is. Checkers that have nothing to suspend ignore both.
    virtual void suspend() {}
    virtual void resume() {}
};

}  // namespace vmha::checkers
