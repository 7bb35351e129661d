// Probe: one kind of check, run once per call; and the ProbingChecker that runs a probe every
// interval and applies the failures count (shared by every checker kind).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>

#include <checkers/checker.h>

namespace vmha::checkers::detail {

// One kind of check. Owned by a ProbingChecker and driven on its executor.
class Probe {
  public:
    using Done = std::function<void(CheckResult)>;

    virtual ~Probe() = default;
    // Starts one check; `done` is called once, on the executor, unless cancel() comes first.
    // Only one check runs at a time.
    virtual void run(Done done) = 0;
    // Abandons the check in flight, if any: its `done` is never called. Child processes are
    // killed and still reaped.
    virtual void cancel() = 0;
};

// Runs `work` (returns a CheckResult) on `pool` and hands the result to `done` on `executor`.
// `done` must not own anything whose destruction off the executor is unsafe: it is destroyed
// on the executor, while the pool job holds only the executor and the work.
void run_blocking(boost::asio::thread_pool& pool, const boost::asio::any_io_executor& executor,
                  std::function<CheckResult()> work, std::function<void(CheckResult)> done);

// A result stamped now.
CheckResult make_result(Verdict verdict, std::string reason, Cause cause = Cause::none);

struct Schedule {
    std::chrono::milliseconds interval{5000};
    unsigned failures = 1;  // consecutive failed checks before the verdict turns failed
};

// The Checker every kind shares. Owned by its module, on `executor`. The probing state lives
// in a shared Core so that completions arriving after stop() find it (and do nothing).
class ProbingChecker : public Checker {
  public:
    ProbingChecker(std::string name, boost::asio::any_io_executor executor, Schedule schedule,
                   std::unique_ptr<Probe> probe);
    ~ProbingChecker() override;

    const std::string& name() const override { return name_; }
    void start(Report report) override;
    void stop() override;
    void suspend() override;
    void resume() override;

    // Checks at once (or right after the check in flight). Executor only.
    void check_now();

  protected:
    struct Core;
    std::weak_ptr<Core> core() const { return core_; }
    const boost::asio::any_io_executor& executor() const { return executor_; }
    // Called on the executor from the Core, to let a weak reference re-check.
    static void check_now(const std::shared_ptr<Core>& core);

  private:
    std::string name_;
    boost::asio::any_io_executor executor_;
    std::shared_ptr<Core> core_;
};

}  // namespace vmha::checkers::detail
