// The vm checker: the module's domain, through the Hypervisor boundary.
#include <atomic>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include <vmha/config/units.h>

#include "probes.h"

namespace vmha::checkers::detail {

namespace asio = boost::asio;

CheckResult judge_domain(const std::string& domain, const Result<hv::DomainStatus>& status,
                         const Status* agent) {
    if (!status) {
        return make_result(Verdict::unknown,
                           fmt::format("domain \"{}\": status could not be read: {}", domain,
                                       status.error().message));
    }
    const hv::DomainStatus& s = *status;
    auto with_reason = [&](std::string_view what) {
        return s.reason.empty() ? fmt::format("domain \"{}\" {}", domain, what)
                                : fmt::format("domain \"{}\" {} ({})", domain, what, s.reason);
    };
    switch (s.state) {
        case hv::DomainState::running:
            if (agent != nullptr && !*agent) {
                return make_result(Verdict::failed,
                                   fmt::format("domain \"{}\" runs but its guest agent does not "
                                               "answer: {}",
                                               domain, agent->error().message),
                                   Cause::hung);
            }
            return make_result(Verdict::healthy, with_reason("is running"));
        case hv::DomainState::paused:
            if (s.paused_on_io_error()) {
                return make_result(Verdict::failed,
                                   fmt::format("domain \"{}\" paused on an I/O error", domain),
                                   Cause::paused_on_io_error);
            }
            return make_result(Verdict::failed, with_reason("is paused"), Cause::paused);
        case hv::DomainState::absent:
            return make_result(
                Verdict::failed,
                fmt::format("domain \"{}\" is not defined on this hypervisor", domain),
                Cause::stopped);
        case hv::DomainState::shutoff:
            return make_result(Verdict::failed, with_reason("shut off"), Cause::stopped);
        case hv::DomainState::crashed:
            return make_result(Verdict::failed, with_reason("crashed"), Cause::stopped);
        case hv::DomainState::shutting_down:
            return make_result(Verdict::failed, with_reason("is shutting down"), Cause::stopped);
        case hv::DomainState::other:
            break;
    }
    return make_result(Verdict::unknown, with_reason("is in a state vmha does not judge"));
}

namespace {

// One status() (and guest-agent ping) per check, on the blocking pool, raced against a
// deadline on the executor. A call the hypervisor never returns from keeps `busy` set, and
// later checks say so instead of piling up blocked threads.
class VmProbe : public Probe {
  public:
    VmProbe(asio::any_io_executor executor, asio::thread_pool& blocking, VmOptions options)
        : executor_(std::move(executor)), blocking_(blocking), options_(std::move(options)) {}

    void run(Done done) override {
        auto attempt = std::make_shared<Attempt>(executor_, std::move(done));
        current_ = attempt;
        if (busy_->load()) {
            finish(attempt, make_result(Verdict::unknown,
                                        fmt::format("domain \"{}\": the hypervisor has not yet "
                                                    "answered the previous check",
                                                    options_.domain)));
            return;
        }
        busy_->store(true);
        const auto deadline =
            options_.timeout * (options_.guest_agent ? 2 : 1) + std::chrono::seconds(1);
        attempt->deadline.expires_after(deadline);
        attempt->deadline.async_wait([this, weak = std::weak_ptr(attempt),
                                      deadline](boost::system::error_code ec) {
            auto a = weak.lock();
            if (ec || !a) return;
            finish(a, make_result(Verdict::unknown,
                                  fmt::format("domain \"{}\": the hypervisor did not answer "
                                              "within {}",
                                              options_.domain, config::format_duration(deadline))));
        });
        run_blocking(
            blocking_, executor_,
            [hv = options_.hypervisor, domain = options_.domain, agent = options_.guest_agent,
             timeout = options_.timeout, busy = busy_] {
                const Result<hv::DomainStatus> status = hv->status(domain);
                CheckResult result;
                if (agent && status && status->runs()) {
                    const Status ping = hv->ping_guest_agent(domain, timeout);
                    result = judge_domain(domain, status, &ping);
                } else {
                    result = judge_domain(domain, status, nullptr);
                }
                busy->store(false);
                return result;
            },
            [this, weak = std::weak_ptr(attempt)](CheckResult result) {
                if (auto a = weak.lock()) finish(a, std::move(result));
            });
    }

    void cancel() override {
        if (current_) {
            current_->done = nullptr;
            current_->deadline.cancel();
        }
        current_.reset();
    }

  private:
    struct Attempt {
        Attempt(const asio::any_io_executor& ex, Done d) : deadline(ex), done(std::move(d)) {}
        asio::steady_timer deadline;
        Done done;
    };

    // Executor only. `this` is alive whenever an attempt is: the probe owns current_, and
    // completions hold only weak references to attempts.
    void finish(const std::shared_ptr<Attempt>& attempt, CheckResult result) {
        if (attempt != current_ || !attempt->done) return;
        attempt->deadline.cancel();
        Done done = std::move(attempt->done);
        attempt->done = nullptr;
        current_.reset();
        done(std::move(result));
    }

    asio::any_io_executor executor_;
    asio::thread_pool& blocking_;
    VmOptions options_;
    std::shared_ptr<std::atomic<bool>> busy_ = std::make_shared<std::atomic<bool>>(false);
    std::shared_ptr<Attempt> current_;
};

class VmChecker : public ProbingChecker {
  public:
    VmChecker(std::string name, asio::any_io_executor executor, Schedule schedule,
              std::unique_ptr<Probe> probe, std::string domain, DomainEvents* events)
        : ProbingChecker(std::move(name), std::move(executor), schedule, std::move(probe)),
          domain_(std::move(domain)),
          events_(events) {}
    ~VmChecker() override { VmChecker::stop(); }

    void start(Report report) override {
        if (events_ != nullptr) {
            subscription_ = events_->subscribe(
                domain_, [weak = core(), ex = executor()](const hv::LifecycleEvent&) {
                    asio::post(ex, [weak] {
                        if (auto core = weak.lock()) ProbingChecker::check_now(core);
                    });
                });
        }
        ProbingChecker::start(std::move(report));
    }

    void stop() override {
        subscription_.reset();
        ProbingChecker::stop();
    }

  private:
    std::string domain_;
    DomainEvents* events_;
    DomainEvents::Subscription subscription_;
};

}  // namespace

std::unique_ptr<Checker> make_vm_checker(std::string name, asio::any_io_executor executor,
                                         asio::thread_pool& blocking, Schedule schedule,
                                         VmOptions options, DomainEvents* events) {
    std::string domain = options.domain;
    auto probe = std::make_unique<VmProbe>(executor, blocking, std::move(options));
    return std::make_unique<VmChecker>(std::move(name), std::move(executor), schedule,
                                       std::move(probe), std::move(domain), events);
}

}  // namespace vmha::checkers::detail
