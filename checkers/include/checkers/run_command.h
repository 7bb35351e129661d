// A command run once, for hooks that are not checkers (the fencing hook): the command checker's
// way of running a program (no shell, its own process group, stdin from /dev/null, the first
// line of its output in the reason, the whole group killed at the timeout, always reaped).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>

#include <vmha/error.h>

namespace vmha::checkers {

class CommandRunner {
public:
    explicit CommandRunner(boost::asio::any_io_executor executor);
    ~CommandRunner();  // cancels the run in flight
    CommandRunner(const CommandRunner&) = delete;
    CommandRunner& operator=(const CommandRunner&) = delete;

    // Starts `argv`; `done` once, on the executor: ok on exit status 0; else an Error (timeout
    // when it was killed at the timeout, busy otherwise) whose message names the command, its
    // exit status or signal, and the first line it printed. One run at a time: a run started
    // while another is in flight cancels that one (its `done` is never called).
    void run(std::vector<std::string> argv, std::chrono::milliseconds timeout,
             std::function<void(Status)> done);
    void cancel();
    bool running() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace vmha::checkers
