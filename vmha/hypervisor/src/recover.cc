// recover_paused_guest(): resume, watch it settle, resume again with backoff.
#include <vmha/hypervisor/recover.h>

#include <algorithm>
#include <thread>

#include <fmt/format.h>

namespace vmha::hv {

Status recover_paused_guest(Hypervisor& hypervisor, const std::string& domain,
                            std::chrono::milliseconds deadline) {
    return recover_paused_guest(hypervisor, domain, deadline, RecoverOptions{});
}

Status recover_paused_guest(Hypervisor& hypervisor, const std::string& domain,
                            std::chrono::milliseconds deadline, const RecoverOptions& options) {
    using std::chrono::milliseconds;
    using std::chrono::steady_clock;
    const auto now = [&] { return options.now ? options.now() : steady_clock::now(); };
    const auto sleep = [&](milliseconds d) {
        if (options.sleep) {
            options.sleep(d);
        } else {
            std::this_thread::sleep_for(d);
        }
    };
    const auto started = now();
    const auto end = started + deadline;
    const auto elapsed_ms = [&] {
        return std::chrono::duration_cast<milliseconds>(now() - started).count();
    };

    int resumes = 0;
    milliseconds backoff = options.initial_backoff;
    std::string last_resume_error;
    for (;;) {
        Result<DomainStatus> status = hypervisor.status(domain);
        if (!status) return std::move(status).error();
        if (status->state == DomainState::absent) {
            return Error(errc::not_found, fmt::format("domain \"{}\": cannot resume it: it is not defined", domain));
        }
        if (status->state == DomainState::paused) {
            if (!status->paused_on_io_error()) {
                return Error(errc::hypervisor_error,
                             fmt::format("domain \"{}\": paused ({}), not on an I/O error: left alone",
                                         domain, status->reason));
            }
            ++resumes;
            if (Status resumed = hypervisor.resume(domain); !resumed) {
                last_resume_error = resumed.error().message;
            }
        } else if (!status->runs()) {
            return Error(errc::hypervisor_error,
                         fmt::format("domain \"{}\": is {} ({}), not paused: nothing to resume",
                                     domain, to_string(status->state), status->reason));
        }

        // Settle: it must stay running for options.settle.
        const auto settle_end = now() + options.settle;
        bool stayed = true;
        while (now() < settle_end) {
            if (now() >= end) break;
            sleep(std::min(options.poll, std::chrono::duration_cast<milliseconds>(settle_end - now()) +
                                             milliseconds(1)));
            Result<DomainStatus> s = hypervisor.status(domain);
            if (!s) return std::move(s).error();
            if (!s->runs()) {
                stayed = false;
                break;
            }
        }
        if (stayed && now() >= settle_end) return {};

        if (now() + backoff >= end) {
            std::string why = last_resume_error.empty()
                                  ? std::string("it paused again on an I/O error each time")
                                  : fmt::format("the last resume failed: {}", last_resume_error);
            return Error(errc::timeout,
                         fmt::format("domain \"{}\": did not stay running for {} ms after {} "
                                     "resume(s) within {} ms: {}",
                                     domain, options.settle.count(), resumes, elapsed_ms(), why));
        }
        sleep(backoff);
        backoff = std::min(backoff * 2, options.max_backoff);
    }
}

}  // namespace vmha::hv
