// ImagesyncSupervisor: keeps one module's imagesyncd running on this node.
//
// imagesyncd is the VM's I/O path, so it must outlive vmhad: it is spawned in its own session
// (setsid), with stdin on /dev/null, stdout and stderr appended to
// <run_dir>/<module>/imagesyncd.log, no other inherited descriptor, and its pid in
// <run_dir>/<module>/imagesyncd.pid. It starts as secondary; vmhad promotes it later through
// control().
//
// start(): if the pid file names a live process whose /proc/PID/cmdline is an imagesyncd
// serving our control socket, and that socket answers "status" with the same pid, the process
// is adopted ("re-attached": no restart, the VM's I/O goes on). Otherwise a new one is spawned.
// A process is "running" once its control socket answers status (within ready_timeout; a
// process that does not is killed and counted as died).
//
// Death is watched with a pidfd (works for processes that are not our children, i.e. after a
// re-attach); our own children are reaped with waitpid. On death: reported with its exit status
// or signal, then restarted after a backoff (initial_backoff, doubling up to max_backoff; back
// to initial_backoff after a process ran stable_after).
//
// stop() ends the process (SIGTERM; SIGKILL after stop_timeout): only for `vmha stop`. vmhad's
// own shutdown calls detach() (the destructor does too), which leaves imagesyncd running.
//
// Owned by the io_context's single thread (the vmhad loop): construct, call and destroy it
// there; the listener runs there.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <vmha/config/config.h>
#include <vmha/error.h>
#include <vmha/services/asio.h>
#include <vmha/services/imagesync_control.h>

namespace vmha::services {

// Where one module's imagesyncd keeps its files on this node.
struct ImagesyncPaths {
    std::filesystem::path run_dir;       // <run_dir>/<module>
    std::filesystem::path meta_dir;      // <state_dir>/<module>/meta
    std::filesystem::path nbd_socket;    // <run_dir>/<module>/nbd.sock
    std::filesystem::path control_socket;  // <run_dir>/<module>/imagesync.sock
    std::filesystem::path pid_file;      // <run_dir>/<module>/imagesyncd.pid
    std::filesystem::path log_file;      // <run_dir>/<module>/imagesyncd.log
};
ImagesyncPaths imagesync_paths(const config::Module& module, const config::Node& node);

// The imagesyncd command line for `module` on `node` (argv[0] = `binary`). Fails when the
// module does not name this node.
vmha::Result<std::vector<std::string>> imagesyncd_argv(const config::Module& module,
                                                       const config::Node& node,
                                                       const std::filesystem::path& binary,
                                                       const std::string& log_level = "info");

// The imagesyncd next to the running program (/proc/self/exe's directory).
std::filesystem::path default_imagesyncd_path();

struct SupervisorOptions {
    std::filesystem::path imagesyncd = default_imagesyncd_path();
    std::string log_level = "info";
    std::chrono::milliseconds initial_backoff{200};
    std::chrono::milliseconds max_backoff{5000};
    std::chrono::milliseconds stable_after{10000};   // ran this long: backoff starts over
    std::chrono::milliseconds ready_timeout{30000};  // control socket answers status by then
    std::chrono::milliseconds stop_timeout{30000};   // SIGTERM, then SIGKILL
};

class ImagesyncSupervisor {
public:
    enum class State {
        idle,        // not started
        starting,    // spawned or found; waiting for the control socket
        running,     // answering on its control socket
        restarting,  // died; waiting for the backoff
        stopping,    // stop(): SIGTERM sent
        stopped,     // stop() finished: no process
        detached,    // detach(): left running, no longer watched
    };
    struct Event {
        enum class Kind { running, died, restarting, stopped } kind;
        pid_t pid = -1;
        bool reattached = false;         // running: adopted, not spawned
        std::string reason;              // died: exit status or signal; restarting: the delay
        std::chrono::milliseconds delay{0};  // restarting
    };
    using Listener = std::function<void(const Event&)>;

    ImagesyncSupervisor(boost::asio::io_context& io, config::Module module, config::Node node,
                        SupervisorOptions options, Listener listener);
    ~ImagesyncSupervisor();  // detach()
    ImagesyncSupervisor(const ImagesyncSupervisor&) = delete;
    ImagesyncSupervisor& operator=(const ImagesyncSupervisor&) = delete;

    // Re-attach or spawn. Errors only for what no retry can fix (the module does not name this
    // node, the directories cannot be created); spawn failures are retried with the backoff.
    vmha::Status start();
    // SIGTERM, wait up to stop_timeout, then SIGKILL; removes the pid file; `done` on the loop.
    void stop(std::function<void(vmha::Status)> done);
    // Stops watching and leaves the process running (vmhad's own shutdown or upgrade).
    void detach();

    State state() const;
    pid_t pid() const;  // -1 when none
    const std::vector<std::string>& argv() const;
    const ImagesyncPaths& paths() const;
    // The running imagesyncd's control socket (requests fail while it is not running).
    ImagesyncControl& control();

private:
    struct Impl;
    std::shared_ptr<Impl> impl_;
};

std::string_view to_string(ImagesyncSupervisor::State state);

}  // namespace vmha::services
