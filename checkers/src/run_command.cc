#include <checkers/run_command.h>

#include "probes.h"

namespace vmha::checkers {

struct CommandRunner::Impl {
    boost::asio::any_io_executor executor;
    std::unique_ptr<detail::Probe> probe;
    bool running = false;
};

CommandRunner::CommandRunner(boost::asio::any_io_executor executor) : impl_(std::make_unique<Impl>()) {
    impl_->executor = std::move(executor);
}

CommandRunner::~CommandRunner() { cancel(); }

void CommandRunner::run(std::vector<std::string> argv, std::chrono::milliseconds timeout,
                        std::function<void(Status)> done) {
    cancel();
    if (argv.empty()) {
        done(Error(errc::invalid_argument, "no command to run"));
        return;
    }
    impl_->probe = detail::make_command_probe(impl_->executor, std::move(argv), timeout);
    impl_->running = true;
    impl_->probe->run([impl = impl_.get(), done = std::move(done)](CheckResult r) {
        impl->running = false;
        if (r.verdict == Verdict::healthy) return done({});
        const bool timed_out = r.reason.find(" timed out after ") != std::string::npos;
        done(Error(timed_out ? errc::timeout : errc::busy, r.reason));
    });
}

void CommandRunner::cancel() {
    if (impl_->probe) impl_->probe->cancel();
    impl_->running = false;
}

bool CommandRunner::running() const { return impl_->running; }

}  // namespace vmha::checkers
