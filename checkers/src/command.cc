// The command checker: runs argv without a shell; exit status 0 is healthy.
//
// The child gets its own process group, stdin from /dev/null, and stdout and stderr on one
// pipe whose first line goes into the reason. Everything is asynchronous on the executor:
// the pipe through a stream_descriptor, the exit through a pidfd (readable once the child
// has exited), the timeout through a timer that SIGKILLs the whole group. The child is always
// reaped, also after cancel(): the pidfd wait keeps its Run alive until then.
#include <array>
#include <cctype>
#include <cerrno>
#include <cstring>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vmha/config/units.h>

#include "probes.h"

extern char** environ;

namespace vmha::checkers::detail {

namespace asio = boost::asio;

namespace {

constexpr std::size_t max_output = 4096;  // bytes of output kept for the reason

std::string first_line(const std::string& output) {
    std::size_t begin = 0;
    while (begin < output.size()) {
        std::size_t end = output.find('\n', begin);
        if (end == std::string::npos) end = output.size();
        std::string line = output.substr(begin, end - begin);
        while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back())) != 0) {
            line.pop_back();
        }
        if (!line.empty()) return line;
        begin = end + 1;
    }
    return {};
}

class Run : public std::enable_shared_from_this<Run> {
  public:
    Run(const asio::any_io_executor& ex, std::string label, std::chrono::milliseconds timeout,
        Probe::Done done)
        : label_(std::move(label)),
          timeout_(timeout),
          done_(std::move(done)),
          output_pipe_(ex),
          exit_(ex),
          deadline_(ex) {}

    // Spawns the child and starts waiting; on failure reports at once (via the executor).
    void start(const std::vector<std::string>& argv) {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0) return fail_to_start("pipe", errno);
        output_pipe_.assign(fds[0]);
        const int write_end = fds[1];

        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_adddup2(&actions, write_end, 1);
        posix_spawn_file_actions_adddup2(&actions, write_end, 2);
        posix_spawnattr_t attr;
        posix_spawnattr_init(&attr);
        sigset_t none;
        sigset_t all;
        sigemptyset(&none);
        sigfillset(&all);
        posix_spawnattr_setsigmask(&attr, &none);
        posix_spawnattr_setsigdefault(&attr, &all);
        posix_spawnattr_setpgroup(&attr, 0);
        posix_spawnattr_setflags(&attr,
                                 static_cast<short>(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                                    POSIX_SPAWN_SETSIGDEF));
        std::vector<char*> args;
        for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        const int rc = ::posix_spawnp(&pid_, args[0], &actions, &attr, args.data(), environ);
        posix_spawn_file_actions_destroy(&actions);
        posix_spawnattr_destroy(&attr);
        ::close(write_end);
        if (rc != 0) return fail_to_start("spawn", rc);

        const long pidfd = ::syscall(SYS_pidfd_open, pid_, 0);
        if (pidfd < 0) {
            const int err = errno;
            kill_group();
            int status = 0;
            ::waitpid(pid_, &status, 0);  // just killed: returns at once
            reaped_ = true;
            return fail_to_start("pidfd_open", err);
        }
        exit_.assign(static_cast<int>(pidfd));

        exit_.async_wait(
            asio::posix::stream_descriptor::wait_read,
            [self = shared_from_this()](boost::system::error_code) { self->on_exit(); });
        read_more();
        deadline_.expires_after(timeout_);
        deadline_.async_wait([weak = weak_from_this()](boost::system::error_code ec) {
            auto self = weak.lock();
            if (ec || !self || self->reaped_) return;
            self->timed_out_ = true;
            self->kill_group();
        });
    }

    // Drops the report and kills the child; the exit wait still reaps it.
    void cancel() {
        done_ = nullptr;
        deadline_.cancel();
        if (pid_ > 0 && !reaped_) kill_group();
    }

  private:
    void fail_to_start(const char* what, int err) {
        result_ =
            make_result(Verdict::failed, fmt::format("command \"{}\" could not be started ({}): {}",
                                                     label_, what, std::strerror(err)));
        exited_ = true;
        output_done_ = true;
        asio::post(deadline_.get_executor(), [self = shared_from_this()] { self->maybe_finish(); });
    }

    void kill_group() { ::kill(-pid_, SIGKILL); }

    void read_more() {
        output_pipe_.async_read_some(
            asio::buffer(buffer_),
            [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
                self->keep(n);
                if (ec == asio::error::operation_aborted) {
                    self->drain();
                } else if (!ec) {
                    self->read_more();
                    return;
                }
                self->output_done_ = true;
                self->maybe_finish();
            });
    }

    void keep(std::size_t n) {
        const std::size_t room = max_output - std::min(max_output, output_.size());
        output_.append(buffer_.data(), std::min(n, room));
    }

    // After the exit: whatever the child left in the pipe, without waiting for more (a
    // grandchild may hold the pipe open).
    void drain() {
        for (;;) {
            const ssize_t n = ::read(output_pipe_.native_handle(), buffer_.data(), buffer_.size());
            if (n <= 0) break;
            keep(static_cast<std::size_t>(n));
        }
    }

    void on_exit() {
        int status = 0;
        const pid_t r = ::waitpid(pid_, &status, WNOHANG);
        reaped_ = true;
        exited_ = true;
        deadline_.cancel();
        if (r != pid_) {
            result_ = make_result(Verdict::unknown,
                                  fmt::format("command \"{}\": its exit status could not be read "
                                              "(is SIGCHLD ignored?)",
                                              label_));
        } else {
            status_ = status;
        }
        if (!output_done_) output_pipe_.cancel();
        maybe_finish();
    }

    void maybe_finish() {
        if (!exited_ || !output_done_ || finished_) return;
        finished_ = true;
        if (!done_) return;
        if (result_.reason.empty()) result_ = judge();
        Probe::Done done = std::move(done_);
        done_ = nullptr;
        done(std::move(result_));
    }

    CheckResult judge() const {
        if (timed_out_) {
            return make_result(Verdict::failed,
                               fmt::format("command \"{}\" timed out after {}", label_,
                                           config::format_duration(timeout_)));
        }
        const std::string line = first_line(output_);
        const std::string said = line.empty() ? "" : fmt::format(": {}", line);
        if (WIFEXITED(status_)) {
            const int code = WEXITSTATUS(status_);
            if (code == 0) {
                return make_result(Verdict::healthy,
                                   fmt::format("command \"{}\" succeeded", label_));
            }
            return make_result(
                Verdict::failed,
                fmt::format("command \"{}\" exited with status {}{}", label_, code, said));
        }
        if (WIFSIGNALED(status_)) {
            return make_result(
                Verdict::failed,
                fmt::format("command \"{}\" was killed by signal {} ({}){}", label_,
                            WTERMSIG(status_), ::strsignal(WTERMSIG(status_)), said));
        }
        return make_result(Verdict::unknown, fmt::format("command \"{}\" ended with wait status {}",
                                                         label_, status_));
    }

    std::string label_;
    std::chrono::milliseconds timeout_;
    Probe::Done done_;
    asio::posix::stream_descriptor output_pipe_;
    asio::posix::stream_descriptor exit_;  // the pidfd
    asio::steady_timer deadline_;
    std::array<char, 1024> buffer_{};
    std::string output_;
    pid_t pid_ = 0;
    int status_ = 0;
    bool reaped_ = false;
    bool exited_ = false;
    bool output_done_ = false;
    bool timed_out_ = false;
    bool finished_ = false;
    CheckResult result_;
};

class CommandProbe : public Probe {
  public:
    CommandProbe(asio::any_io_executor executor, std::vector<std::string> argv,
                 std::chrono::milliseconds timeout)
        : executor_(std::move(executor)), argv_(std::move(argv)), timeout_(timeout) {}
    ~CommandProbe() override { CommandProbe::cancel(); }

    void run(Done done) override {
        auto run = std::make_shared<Run>(executor_, argv_.front(), timeout_, std::move(done));
        current_ = run;
        run->start(argv_);
    }

    void cancel() override {
        if (auto run = current_.lock()) run->cancel();
        current_.reset();
    }

  private:
    asio::any_io_executor executor_;
    std::vector<std::string> argv_;
    std::chrono::milliseconds timeout_;
    std::weak_ptr<Run> current_;
};

}  // namespace

std::unique_ptr<Probe> make_command_probe(asio::any_io_executor executor,
                                          std::vector<std::string> argv,
                                          std::chrono::milliseconds timeout) {
    return std::make_unique<CommandProbe>(std::move(executor), std::move(argv), timeout);
}

}  // namespace vmha::checkers::detail
