// One mirror module inside vmhad: its ModuleRunner (vmha/module) and the real ports it runs
// through — imagesyncd supervised and driven over its control socket, the VM through the
// Hypervisor backend (blocking calls on the worker pool), the peer through the PeerHub, the
// module state in a file — plus its checkers.
//
// Threading: owned by the daemon's io_context thread; every callback lands there. Hypervisor
// calls run on the worker pool and post their results back.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <vmha/services/asio.h>

#include <boost/asio/thread_pool.hpp>
#include <nlohmann/json.hpp>

#include <checkers/checker.h>
#include <checkers/domain_events.h>
#include <vmha/config/config.h>
#include <vmha/hypervisor/hypervisor.h>
#include <vmha/module/runner.h>
#include <vmha/peer/peer.h>
#include <vmha/services/imagesync_supervisor.h>

namespace vmha::daemon {

class Journal;

struct ModuleSetup {
    config::Module module;
    std::string module_yaml;  // the file's text (the peer compares fingerprints of it)
    std::string domain_xml;   // the domain definition the module names
    config::Node node;
    services::SupervisorOptions supervisor;
};

class ModuleHost {
public:
    ModuleHost(boost::asio::io_context& io, boost::asio::thread_pool& pool, ModuleSetup setup,
               hv::Hypervisor& hypervisor, checkers::DomainEvents& events, peer::PeerHub& hub);
    ~ModuleHost();
    ModuleHost(const ModuleHost&) = delete;
    ModuleHost& operator=(const ModuleHost&) = delete;

    // Re-attaches to (or spawns) imagesyncd, opens the peer channel, starts the checkers and
    // the runner. Errors are what no retry can fix.
    Status start();
    // vmhad is going away: leave imagesyncd and the VM running, stop everything else.
    void shutdown();

    const std::string& name() const;
    module::ModuleRunner& runner();
    nlohmann::json status() const;
    void swap(std::function<void(Status)> done);
    Status start_module();  // `vmha start`
    void stop_module(std::function<void(Status)> done);  // `vmha stop`: done once in STOP
    void restart(std::function<void(Status)> done);  // `vmha restart`: the VM only, here
    void prim(bool force, std::function<void(Status)> done);  // `vmha prim [--force]`
    nlohmann::json prim_preview() const;                     // what `prim --force` discards
    Status prim_refusal(bool force) const;                   // why `prim` would be refused
    Status second();                                         // `vmha second`
    Status set_failover(bool on);                            // `vmha failover on|off`
    // `vmha resync` / `vmha verify` through imagesyncd on this node (it must be primary).
    void resync(bool full, std::function<void(Result<nlohmann::json>)> done);
    void verify(bool mark, std::function<void(Result<nlohmann::json>)> done);
    // Resync and verify progress as imagesyncd last reported it (polled every second).
    nlohmann::json progress() const;
    Journal& journal();
    // `vmha swap MODULE --at WHEN [--to NODE]`: a one-off swap, to the node that does not run
    // the VM now unless `to` names one. Also sent to the peer (now, or once the channel is up).
    Result<nlohmann::json> schedule_swap(const std::string& when, const std::string& to, const std::string& by);
    // `vmha schedule cancel MODULE ID`.
    Result<nlohmann::json> cancel_scheduled(const std::string& id, const std::string& by);
    // `vmha schedule [MODULE]`: the plan (Scheduler::plan_json) with the failback mode.
    nlohmann::json schedule() const;

    // Forwarding over the peer control channel: a request for the peer's vmhad, answered by
    // its admin dispatch as if asked there. The channel down, or no answer within `timeout`:
    // an Error (connection_lost, timeout).
    using AdminCall = std::function<void(nlohmann::json request,
                                         std::function<void(Result<nlohmann::json>)> done)>;
    void serve_forwarded(AdminCall call);  // how requests from the peer are answered here
    void forward(nlohmann::json request, std::chrono::milliseconds timeout,
                 std::function<void(Result<nlohmann::json>)> done);
    bool channel_up() const;
    bool peer_runs_vm() const;  // the peer's last report says ALONE or PRIM
    const std::string& peer_name() const;

    struct Ports;

private:
    std::unique_ptr<Ports> ports_;
};

}  // namespace vmha::daemon
