// Resuming a guest that paused on an I/O error after its NBD server (imagesyncd) came back.
//
// Under libvirt 9.0 QEMU's NBD client runs with reconnect-delay 0: after imagesyncd restarts,
// QEMU reconnects in the background only when a request fails, with a backoff of about a
// second. A single resume therefore often re-submits the failed request before the reconnect,
// and the guest pauses again on "ioerror". This helper resumes, watches that the guest stays
// running for a settle time, and resumes again with a growing backoff (docs/hypervisor.md has
// the measurements).
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include <vmha/error.h>
#include <vmha/hypervisor/hypervisor.h>

namespace vmha::hv {

struct RecoverOptions {
    // The guest counts as recovered once it stayed running this long after a resume.
    std::chrono::milliseconds settle{1000};
    // How often status() is polled while settling.
    std::chrono::milliseconds poll{50};
    // Pause between a failed attempt and the next resume: initial, doubled up to max.
    std::chrono::milliseconds initial_backoff{200};
    std::chrono::milliseconds max_backoff{1000};
    // Clock and sleep; a simulation replaces both with its virtual clock.
    std::function<std::chrono::steady_clock::time_point()> now;
    std::function<void(std::chrono::milliseconds)> sleep;
};

// Brings `domain`, paused on an I/O error, back to running within `deadline`.
// Success: the guest stayed running for options.settle after the last resume (a guest found
// running is only watched for the settle time). Errors: not_found (absent), hypervisor_error
// (shut off, or paused for another reason than an I/O error: left alone), timeout (it kept
// pausing until the deadline; the message says how many resumes were tried), or the error of
// the failing status() call. Blocking: call it from a worker thread.
Status recover_paused_guest(Hypervisor& hypervisor, const std::string& domain,
                            std::chrono::milliseconds deadline);
Status recover_paused_guest(Hypervisor& hypervisor, const std::string& domain,
                            std::chrono::milliseconds deadline, const RecoverOptions& options);

}  // namespace vmha::hv
