#include <vmha/services/imagesync_supervisor.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>

#include <boost/asio/post.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

extern char** environ;

namespace vmha::services {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

constexpr auto ready_poll_interval = 50ms;
constexpr auto kill_grace = 5s;  // after SIGKILL, the death must be seen within this

std::string host_port(const config::Host& host, std::uint16_t port) {
    return host.kind == config::Host::Kind::ipv6 ? fmt::format("[{}]:{}", host.text, port)
                                                 : fmt::format("{}:{}", host.text, port);
}

const config::Host& replication_host(const config::ModuleNode& n) {
    return n.replication_address ? *n.replication_address : n.address;
}

std::string describe_wait_status(int status) {
    if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
    if (WIFSIGNALED(status)) {
        const char* abbrev = ::sigabbrev_np(WTERMSIG(status));
        return fmt::format("killed by signal {} (SIG{})", WTERMSIG(status), abbrev ? abbrev : "?");
    }
    return fmt::format("ended with wait status {:#x}", status);
}

std::vector<std::string> read_cmdline(pid_t pid) {
    std::ifstream in(fmt::format("/proc/{}/cmdline", pid), std::ios::binary);
    std::string all{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    std::vector<std::string> args;
    std::string arg;
    std::istringstream s(all);
    while (std::getline(s, arg, '\0')) args.push_back(arg);
    return args;
}

std::optional<pid_t> read_pid_file(const fs::path& path) {
    std::ifstream in(path);
    long long pid = 0;
    if (!(in >> pid) || pid <= 1 || pid > std::numeric_limits<pid_t>::max()) return std::nullopt;
    return static_cast<pid_t>(pid);
}

vmha::Status write_pid_file(const fs::path& path, pid_t pid) {
    const fs::path tmp = path.string() + ".tmp";
    {
        std::ofstream out(tmp, std::ios::trunc);
        out << pid << '\n';
        if (!out.flush()) {
            return vmha::Error(errc::io_error,
                               fmt::format("cannot write pid file \"{}\"", tmp.string()));
        }
    }
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec) {
        return vmha::Error(errc_from_errno(ec.value()),
                           fmt::format("cannot rename \"{}\" to \"{}\": {}", tmp.string(),
                                       path.string(), ec.message()));
    }
    return {};
}

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

}  // namespace

ImagesyncPaths imagesync_paths(const config::Module& module, const config::Node& node) {
    ImagesyncPaths p;
    p.run_dir = fs::path(node.run_dir) / module.name;
    p.meta_dir = fs::path(node.state_dir) / module.name / "meta";
    p.nbd_socket = p.run_dir / "nbd.sock";
    p.control_socket = p.run_dir / "imagesync.sock";
    p.pid_file = p.run_dir / "imagesyncd.pid";
    p.log_file = p.run_dir / "imagesyncd.log";
    return p;
}

vmha::Result<std::vector<std::string>> imagesyncd_argv(const config::Module& module,
                                                       const config::Node& node,
                                                       const fs::path& binary,
                                                       const std::string& log_level) {
    const config::ModuleNode* self = module.node(node.name);
    const config::ModuleNode* peer = module.peer_of(node.name);
    if (self == nullptr || peer == nullptr) {
        return vmha::Error(errc::not_found, fmt::format("module \"{}\" is not configured on node \"{}\"",
                                                        module.name, node.name));
    }
    const ImagesyncPaths p = imagesync_paths(module, node);
    std::vector<std::string> argv = {
        binary.string(),
        "--nbd-socket", p.nbd_socket.string(),
        "--meta-dir", p.meta_dir.string(),
        "--control-socket", p.control_socket.string(),
        "--role", "secondary",
        "--module", module.name,
        "--node", node.name,
        "--listen", host_port(replication_host(*self), module.replication.port),
        "--peer", host_port(replication_host(*peer), module.replication.port),
        "--timeout-ms", std::to_string(module.replication.timeout.count()),
        "--resync-rate", std::to_string(module.replication.resync_rate),
        "--split-brain", std::string(config::to_string(module.replication.split_brain)),
        "--chunk-size", std::to_string(module.replication.chunk_size),
        "--al-extent", std::to_string(module.replication.activity_log_extent),
        "--tcp-congestion", module.replication.tcp_congestion,
        "--log-level", log_level,
        // vmhad fences: after losing the peer, write replies wait until vmhad knows the peer
        // Outdated or gone (imagesync resume-io).
        "--fence",
    };
    bool qcow2 = false;
    for (const auto& disk : module.disks) {
        argv.push_back("--image");
        argv.push_back(disk.export_name + "=" + disk.path);
        qcow2 = qcow2 || disk.format == config::DiskFormat::qcow2;
    }
    if (qcow2) argv.push_back("--growable");
    return argv;
}

fs::path default_imagesyncd_path() {
    std::error_code ec;
    const fs::path self = fs::read_symlink("/proc/self/exe", ec);
    if (ec) return "imagesyncd";
    return self.parent_path() / "imagesyncd";
}

std::string_view to_string(ImagesyncSupervisor::State state) {
    using S = ImagesyncSupervisor::State;
    switch (state) {
        case S::idle: return "idle";
        case S::starting: return "starting";
        case S::running: return "running";
        case S::restarting: return "restarting";
        case S::stopping: return "stopping";
        case S::stopped: return "stopped";
        case S::detached: return "detached";
    }
    return "?";
}

struct ImagesyncSupervisor::Impl : std::enable_shared_from_this<Impl> {
    using State = ImagesyncSupervisor::State;
    using Event = ImagesyncSupervisor::Event;

    Impl(asio::io_context& io_context, config::Module m, config::Node n, SupervisorOptions o,
         Listener l)
        : io(io_context), module(std::move(m)), node(std::move(n)), options(std::move(o)),
          listener(std::move(l)), paths(imagesync_paths(module, node)),
          control(io, paths.control_socket), timer(io), backoff(options.initial_backoff) {}

    // -- start ------------------------------------------------------------------------------

    vmha::Status start() {
        if (state != State::idle && state != State::stopped && state != State::detached) {
            return {};
        }
        auto a = imagesyncd_argv(module, node, options.imagesyncd, options.log_level);
        if (!a) return std::move(a).error();
        argv = std::move(*a);
        for (const fs::path& dir : {paths.run_dir, paths.meta_dir.parent_path()}) {
            std::error_code ec;
            fs::create_directories(dir, ec);
            if (ec) {
                return vmha::Error(errc_from_errno(ec.value()),
                                   fmt::format("module \"{}\": cannot create \"{}\": {}",
                                               module.name, dir.string(), ec.message()));
            }
        }
        if (!try_reattach()) spawn();
        return {};
    }

    // Adopts the process the pid file names when it is our imagesyncd; false otherwise.
    bool try_reattach() {
        const auto found = read_pid_file(paths.pid_file);
        if (!found) return false;
        const auto args = read_cmdline(*found);
        bool ours = !args.empty() && fs::path(args[0]).filename() == "imagesyncd";
        bool socket_matches = false;
        for (std::size_t i = 0; ours && i + 1 < args.size(); ++i) {
            if (args[i] == "--control-socket" && fs::path(args[i + 1]) == paths.control_socket) {
                socket_matches = true;
            }
        }
        if (!ours || !socket_matches) {
            spdlog::info("module \"{}\": pid file \"{}\" names pid {}, which is not this module's "
                         "imagesyncd; starting a new one",
                         module.name, paths.pid_file.string(), *found);
            return false;
        }
        const int fd = pidfd_open(*found);
        if (fd < 0) return false;  // gone meanwhile
        spdlog::info("module \"{}\": found imagesyncd pid {}; re-attaching", module.name, *found);
        begin_process(*found, fd, /*reattached=*/true);
        return true;
    }

    void spawn() {
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&actions, 1, paths.log_file.c_str(),
                                         O_WRONLY | O_CREAT | O_APPEND, 0640);
        posix_spawn_file_actions_adddup2(&actions, 1, 2);
        posix_spawn_file_actions_addclosefrom_np(&actions, 3);  // nothing of vmhad's leaks in
        posix_spawnattr_t attr;
        posix_spawnattr_init(&attr);
        sigset_t none;
        sigemptyset(&none);
        sigset_t defaults;
        sigemptyset(&defaults);
        for (int s : {SIGTERM, SIGINT, SIGHUP, SIGPIPE}) sigaddset(&defaults, s);
        posix_spawnattr_setsigmask(&attr, &none);
        posix_spawnattr_setsigdefault(&attr, &defaults);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK |
                                            POSIX_SPAWN_SETSIGDEF);
        std::vector<char*> args;
        for (auto& a : argv) args.push_back(a.data());
        args.push_back(nullptr);
        pid_t child = -1;
        const int rc = ::posix_spawn(&child, args[0], &actions, &attr, args.data(), environ);
        posix_spawn_file_actions_destroy(&actions);
        posix_spawnattr_destroy(&attr);
        if (rc != 0) {
            const std::string reason = fmt::format("cannot start \"{}\": {}", argv[0], ::strerror(rc));
            spdlog::error("module \"{}\": {}", module.name, reason);
            died(-1, reason);
            return;
        }
        if (auto s = write_pid_file(paths.pid_file, child); !s) {
            spdlog::error("module \"{}\": {} (imagesyncd pid {} runs anyway, but a restarted "
                          "vmhad will not re-attach to it)",
                          module.name, s.error().message, child);
        }
        spdlog::info("module \"{}\": started imagesyncd pid {}", module.name, child);
        spdlog::debug("module \"{}\": imagesyncd command line: {}", module.name,
                      fmt::join(argv, " "));
        const int fd = pidfd_open(child);
        if (fd < 0) {  // cannot watch it: treat as dead and kill it to stay in control
            spdlog::error("module \"{}\": pidfd_open({}) failed: {}", module.name, child,
                          ::strerror(errno));
            ::kill(child, SIGKILL);
            int status = 0;
            ::waitpid(child, &status, 0);
            died(child, "could not be watched (pidfd_open failed), killed");
            return;
        }
        begin_process(child, fd, /*reattached=*/false);
    }

    void begin_process(pid_t p, int fd, bool adopted) {
        pid = p;
        reattached = adopted;
        state = State::starting;
        ++epoch;
        ++process_id;
        pidfd.emplace(io, fd);
        watch_exit();
        ready_deadline = Clock::now() + options.ready_timeout;
        poll_ready(epoch);
    }

    void poll_ready(std::uint64_t e) {
        control.status([weak = weak_from_this(), e](vmha::Result<nlohmann::json> r) {
            auto self = weak.lock();
            if (!self || self->epoch != e || self->state != State::starting) return;
            if (r && r->value("pid", self->pid) == self->pid) {
                self->state = State::running;
                self->started_at = Clock::now();
                spdlog::info("module \"{}\": imagesyncd pid {} is running ({}; {}, {}, data {})",
                             self->module.name, self->pid,
                             self->reattached ? "re-attached" : "started", r->value("role", "?"),
                             r->value("connection", "?"), r->value("data_state", "?"));
                self->notify({Event::Kind::running, self->pid, self->reattached, {}, {}});
                return;
            }
            if (r && r->value("pid", self->pid) != self->pid) {
                spdlog::warn("module \"{}\": control socket \"{}\" is answered by pid {}, not {}",
                             self->module.name, self->paths.control_socket.string(),
                             r->value("pid", -1), self->pid);
            }
            if (Clock::now() >= self->ready_deadline) {
                spdlog::error("module \"{}\": imagesyncd pid {} did not answer on \"{}\" within {} "
                              "ms ({}); killing it",
                              self->module.name, self->pid, self->paths.control_socket.string(),
                              self->options.ready_timeout.count(),
                              r ? "another process answers" : r.error().message);
                ::kill(self->pid, SIGKILL);  // the death handler restarts it
                return;
            }
            self->timer.expires_after(ready_poll_interval);
            self->timer.async_wait([weak = self->weak_from_this(), e](const error_code& ec) {
                auto s = weak.lock();
                if (!s || ec || s->epoch != e) return;
                s->poll_ready(e);
            });
        });
    }

    // -- death and restart ---------------------------------------------------------------------

    // Whether `p` runs (a zombie does not): /proc/PID/stat's state after the command's ')'.
    static bool still_running(pid_t p) {
        std::ifstream in("/proc/" + std::to_string(p) + "/stat");
        std::string line;
        if (!std::getline(in, line)) return false;
        const auto close = line.rfind(')');
        if (close == std::string::npos || close + 2 >= line.size()) return false;
        const char state = line[close + 2];
        return state != 'Z' && state != 'X';
    }

    // The pidfd turns readable when the process exits.
    void watch_exit() {
        const auto watch = process_id;
        pidfd->async_wait(asio::posix::stream_descriptor::wait_read,
                          [weak = weak_from_this(), watch](const error_code& ec) {
                              auto self = weak.lock();
                              if (!self || ec || self->process_id != watch) return;
                              self->on_exit();
                          });
    }

    void on_exit() {
        const pid_t dead = pid;
        std::string reason;
        int status = 0;
        pid_t r;
        do {
            r = ::waitpid(dead, &status, WNOHANG);
        } while (r < 0 && errno == EINTR);
        // Never blocks, and a readiness the process does not confirm is spurious: it still runs
        // (seen under load when a closed pidfd's number was reused at once), so wait again.
        if (r == 0 || (r < 0 && still_running(dead))) {
            spdlog::debug("module \"{}\": imagesyncd pid {} still runs (a spurious wake-up); watching on",
                          module.name, dead);
            watch_exit();
            return;
        }
        if (r == dead) {
            reason = describe_wait_status(status);
        } else {
            reason = "exited (status unknown: not a child of this vmhad)";
        }
        pidfd.reset();
        pid = -1;
        ++process_id;
        std::error_code ignored;
        if (read_pid_file(paths.pid_file) == dead) fs::remove(paths.pid_file, ignored);
        if (state == State::stopping) {
            ++epoch;
            timer.cancel();
            state = State::stopped;
            spdlog::info("module \"{}\": imagesyncd pid {} stopped: {}", module.name, dead, reason);
            notify({Event::Kind::stopped, dead, false, reason, {}});
            if (auto done = std::move(stop_done)) done({});
            return;
        }
        const bool stable = state == State::running && Clock::now() - started_at >= options.stable_after;
        if (stable) backoff = options.initial_backoff;
        spdlog::error("module \"{}\": imagesyncd pid {} {}", module.name, dead, reason);
        died(dead, reason);
    }

    void died(pid_t dead, const std::string& reason) {
        notify({Event::Kind::died, dead, false, reason, {}});
        if (state == State::detached || state == State::stopped) return;  // the listener acted
        const auto delay = backoff;
        backoff = std::min(backoff * 2, options.max_backoff);
        state = State::restarting;
        const auto e = ++epoch;
        spdlog::info("module \"{}\": restarting imagesyncd in {} ms", module.name, delay.count());
        notify({Event::Kind::restarting, -1, false,
                fmt::format("restarting in {} ms", delay.count()), delay});
        if (state != State::restarting || epoch != e) return;
        timer.expires_after(delay);
        timer.async_wait([weak = weak_from_this(), e](const error_code& ec) {
            auto self = weak.lock();
            if (!self || ec || self->epoch != e || self->state != State::restarting) return;
            self->spawn();
        });
    }

    // -- stop and detach -----------------------------------------------------------------------

    void stop(std::function<void(vmha::Status)> done) {
        if (state == State::stopping) {  // a second stop: chained to the first
            auto first = std::move(stop_done);
            stop_done = [first, done](vmha::Status s) {
                if (first) first(s);
                done(std::move(s));
            };
            return;
        }
        if (pid <= 0) {
            ++epoch;
            timer.cancel();
            if (state != State::idle && state != State::detached) state = State::stopped;
            asio::post(io, [done] { done({}); });
            return;
        }
        state = State::stopping;
        stop_done = std::move(done);
        const auto e = ++epoch;
        spdlog::info("module \"{}\": stopping imagesyncd pid {} (SIGTERM)", module.name, pid);
        ::kill(pid, SIGTERM);
        timer.expires_after(options.stop_timeout);
        timer.async_wait([weak = weak_from_this(), e](const error_code& ec) {
            auto self = weak.lock();
            if (!self || ec || self->epoch != e || self->state != State::stopping) return;
            spdlog::warn("module \"{}\": imagesyncd pid {} did not stop within {} ms; SIGKILL",
                         self->module.name, self->pid, self->options.stop_timeout.count());
            ::kill(self->pid, SIGKILL);
            self->timer.expires_after(kill_grace);
            self->timer.async_wait([weak, e](const error_code& ec2) {
                auto s = weak.lock();
                if (!s || ec2 || s->epoch != e || s->state != State::stopping) return;
                auto cb = std::move(s->stop_done);
                const pid_t stuck = s->pid;
                s->state = State::stopped;
                if (cb) {
                    cb(vmha::Error(errc::timeout,
                                   fmt::format("module \"{}\": imagesyncd pid {} survived SIGKILL "
                                               "for {} s",
                                               s->module.name, stuck, kill_grace.count())));
                }
            });
        });
    }

    void detach() {
        if (state == State::detached) return;
        ++epoch;
        ++process_id;
        timer.cancel();
        pidfd.reset();  // closes the pidfd; the process goes on
        if (pid > 0) {
            spdlog::info("module \"{}\": leaving imagesyncd pid {} running (detached)", module.name,
                         pid);
        }
        state = State::detached;
        pid = -1;
        if (auto done = std::move(stop_done)) {
            done(vmha::Error(errc::shutting_down, fmt::format("module \"{}\": the supervisor was "
                                                              "detached while stopping imagesyncd",
                                                              module.name)));
        }
    }

    void notify(const Event& event) {
        if (listener) listener(event);
    }

    asio::io_context& io;
    config::Module module;
    config::Node node;
    SupervisorOptions options;
    Listener listener;
    ImagesyncPaths paths;
    std::vector<std::string> argv;
    ImagesyncControl control;
    asio::steady_timer timer;  // backoff, ready polling, stop deadline: one at a time
    std::optional<asio::posix::stream_descriptor> pidfd;
    State state = State::idle;
    pid_t pid = -1;
    bool reattached = false;
    std::uint64_t epoch = 0;       // bumps at every transition: stale timers and polls return
    std::uint64_t process_id = 0;  // bumps per watched process: a stale death watch returns
    Clock::time_point started_at{};
    Clock::time_point ready_deadline{};
    std::chrono::milliseconds backoff;
    std::function<void(vmha::Status)> stop_done;
};

ImagesyncSupervisor::ImagesyncSupervisor(asio::io_context& io, config::Module module,
                                         config::Node node, SupervisorOptions options,
                                         Listener listener)
    : impl_(std::make_shared<Impl>(io, std::move(module), std::move(node), std::move(options),
                                   std::move(listener))) {}

ImagesyncSupervisor::~ImagesyncSupervisor() {
    impl_->listener = nullptr;
    impl_->detach();
}

vmha::Status ImagesyncSupervisor::start() { return impl_->start(); }
void ImagesyncSupervisor::stop(std::function<void(vmha::Status)> done) { impl_->stop(std::move(done)); }
void ImagesyncSupervisor::detach() { impl_->detach(); }
ImagesyncSupervisor::State ImagesyncSupervisor::state() const { return impl_->state; }
pid_t ImagesyncSupervisor::pid() const { return impl_->pid; }
const std::vector<std::string>& ImagesyncSupervisor::argv() const { return impl_->argv; }
const ImagesyncPaths& ImagesyncSupervisor::paths() const { return impl_->paths; }
ImagesyncControl& ImagesyncSupervisor::control() { return impl_->control; }

}  // namespace vmha::services
