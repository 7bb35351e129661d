#include "probe.h"

#include <fmt/format.h>

#include <vmha/error.h>

namespace vmha::checkers::detail {

namespace asio = boost::asio;

void run_blocking(asio::thread_pool& pool, const asio::any_io_executor& executor,
                  std::function<CheckResult()> work, std::function<void(CheckResult)> done) {
    // `done` travels to the pool and back inside a shared holder that is only ever released
    // on the executor (the pool job drops its reference before posting the last one).
    auto holder = std::make_shared<std::function<void(CheckResult)>>(std::move(done));
    asio::post(pool, [executor, work = std::move(work), holder = std::move(holder)]() mutable {
        CheckResult result = work();
        asio::post(executor, [holder = std::move(holder), result = std::move(result)]() mutable {
            (*holder)(std::move(result));
        });
    });
}

CheckResult make_result(Verdict verdict, std::string reason, Cause cause) {
    return CheckResult{verdict, std::move(reason), std::chrono::steady_clock::now(), cause};
}

// The probing state machine, on the executor:
//   idle --start--> checking --result--> waiting (timer: interval) --expiry--> checking ...
// check_now() cuts a wait short, or marks `again` while checking. stop() cancels everything
// and bumps `generation`, so stale completions are dropped.
struct ProbingChecker::Core : std::enable_shared_from_this<ProbingChecker::Core> {
    Core(asio::any_io_executor ex, Schedule s, std::unique_ptr<Probe> p)
        : schedule(s), probe(std::move(p)), timer(std::move(ex)) {}

    Schedule schedule;
    std::unique_ptr<Probe> probe;
    asio::steady_timer timer;
    Report report;
    bool running = false;
    bool suspended = false;
    bool checking = false;
    bool again = false;
    std::uint64_t generation = 0;
    unsigned failed_in_a_row = 0;
    bool reported_once = false;
    Verdict last_verdict = Verdict::unknown;
    Cause last_cause = Cause::none;

    void launch() {
        checking = true;
        again = false;
        probe->run([weak = weak_from_this(), gen = generation](CheckResult result) {
            if (auto self = weak.lock(); self && self->generation == gen) {
                self->on_result(std::move(result));
            }
        });
    }

    void wait(std::chrono::steady_clock::duration delay) {
        timer.expires_after(delay);
        timer.async_wait([weak = weak_from_this(), gen = generation](boost::system::error_code ec) {
            auto self = weak.lock();
            if (ec || !self || self->generation != gen || !self->running || self->checking) return;
            self->launch();
        });
    }

    void on_result(CheckResult result) {
        checking = false;
        if (!running) return;
        if (!suspended) judge(std::move(result));
        if (!running) return;  // the report may have stopped us
        if (again) {
            timer.cancel();
            launch();
        } else {
            wait(schedule.interval);
        }
    }

    // The failures count: `failures` failed checks in a row make a failed verdict; fewer are
    // reported as unknown only when nothing was reported yet (so a first verdict exists).
    void judge(CheckResult result) {
        if (result.verdict == Verdict::failed) {
            ++failed_in_a_row;
            if (failed_in_a_row < schedule.failures) {
                if (reported_once) return;
                result.reason = fmt::format("{} ({} of {} consecutive failures needed)",
                                            result.reason, failed_in_a_row, schedule.failures);
                result.verdict = Verdict::unknown;
                result.cause = Cause::none;
            }
        } else {
            failed_in_a_row = 0;
        }
        if (reported_once && result.verdict == last_verdict && result.cause == last_cause) return;
        reported_once = true;
        last_verdict = result.verdict;
        last_cause = result.cause;
        Report copy = report;  // the callee may stop (and so clear `report`)
        copy(result);
    }

    void check_now() {
        if (!running) return;
        if (checking) {
            again = true;
            return;
        }
        timer.cancel();
        ++generation;  // the cancelled wait must not launch a second check
        launch();
    }

    void cancel_all() {
        ++generation;
        timer.cancel();
        if (checking) probe->cancel();
        checking = false;
        again = false;
    }
};

ProbingChecker::ProbingChecker(std::string name, asio::any_io_executor executor, Schedule schedule,
                               std::unique_ptr<Probe> probe)
    : name_(std::move(name)),
      executor_(executor),
      core_(std::make_shared<Core>(std::move(executor), schedule, std::move(probe))) {
    if (core_->schedule.failures == 0) core_->schedule.failures = 1;
}

ProbingChecker::~ProbingChecker() {
    ProbingChecker::stop();
}

void ProbingChecker::start(Report report) {
    if (core_->running) internal_error(fmt::format("checker \"{}\" started twice", name_));
    core_->report = std::move(report);
    core_->running = true;
    core_->check_now();
}

void ProbingChecker::stop() {
    if (!core_->running) return;
    core_->running = false;
    core_->cancel_all();
    core_->report = nullptr;
}

void ProbingChecker::suspend() {
    if (!core_->running || core_->suspended) return;
    core_->suspended = true;
    // Keep checking (results are dropped) so that resume() finds the loop alive; forget the
    // streak so that old failures do not count after the intentional change.
    core_->failed_in_a_row = 0;
}

void ProbingChecker::resume() {
    if (!core_->running || !core_->suspended) return;
    core_->suspended = false;
    core_->failed_in_a_row = 0;
    core_->reported_once = false;  // the next verdict is reported whatever it is
    // A result of a check started while suspended would describe the suspended period.
    core_->cancel_all();
    core_->check_now();
}

void ProbingChecker::check_now() {
    core_->check_now();
}

void ProbingChecker::check_now(const std::shared_ptr<Core>& core) {
    core->check_now();
}

}  // namespace vmha::checkers::detail
