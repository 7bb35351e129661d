// BlockingProbe: a probe whose check is one short blocking function run on the blocking pool.
#pragma once

#include <functional>
#include <memory>

#include "probe.h"

namespace vmha::checkers::detail {

class BlockingProbe : public Probe {
  public:
    BlockingProbe(boost::asio::any_io_executor executor, boost::asio::thread_pool& blocking,
                  std::function<CheckResult()> work)
        : executor_(std::move(executor)), blocking_(blocking), work_(std::move(work)) {}

    void run(Done done) override {
        auto attempt = std::make_shared<Done>(std::move(done));
        current_ = attempt;
        run_blocking(blocking_, executor_, work_, [weak = std::weak_ptr(attempt)](CheckResult r) {
            if (auto a = weak.lock(); a && *a) {
                Done d = std::move(*a);
                *a = nullptr;
                d(std::move(r));
            }
        });
    }

    void cancel() override { current_.reset(); }

  private:
    boost::asio::any_io_executor executor_;
    boost::asio::thread_pool& blocking_;
    std::function<CheckResult()> work_;
    std::shared_ptr<Done> current_;
};

}  // namespace vmha::checkers::detail
