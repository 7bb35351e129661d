// vmhad: one per node. Loads the node file and its modules (refusing to start on an invalid
// one), then runs every module's ModuleHost, the admin socket, the health check and the peer
// hub on one io_context; blocking hypervisor calls run on a small worker pool.
//
// Stopping vmhad (SIGTERM, SIGINT) leaves every imagesyncd and every VM running: they do not
// depend on vmhad, and the next vmhad re-attaches to them.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <vmha/services/asio.h>

#include <boost/asio/signal_set.hpp>
#include <boost/asio/thread_pool.hpp>

#include <checkers/domain_events.h>
#include <vmha/config/load.h>
#include <vmha/hypervisor/hypervisor.h>
#include <vmha/peer/peer.h>
#include <vmha/services/admin_server.h>
#include <vmha/services/health_server.h>

#include "module_host.h"

namespace vmha::daemon {

struct DaemonOptions {
    std::filesystem::path node_file = "/etc/vmha/vmha.yaml";
    std::filesystem::path imagesyncd;  // empty: next to vmhad
};

class Daemon final : public services::AdminHandler {
public:
    explicit Daemon(DaemonOptions options);
    ~Daemon() override;

    // Loads and checks everything, opens every socket, starts the modules. An error names the
    // file or the reason, and nothing is left running.
    Status start();
    // Runs the loop until SIGTERM/SIGINT, then leaves imagesyncd and the VMs running.
    int run();

    void handle(const std::string& verb, const nlohmann::json& request,
                std::function<void(Result<nlohmann::json>)> done) override;

private:
    Result<hv::Hypervisor*> hypervisor_for(const std::string& uri);
    ModuleHost* find(const std::string& module);
    void stop();
    // The admin verbs (admin_dispatch.cc).
    using Reply = std::function<void(Result<nlohmann::json>)>;
    void command(ModuleHost& m, const std::string& verb, const nlohmann::json& request, Reply done);
    void failover(ModuleHost* only, const nlohmann::json& request, Reply done);
    void schedule(ModuleHost* only, const nlohmann::json& request, Reply done);

    DaemonOptions options_;
    boost::asio::io_context io_;
    boost::asio::thread_pool pool_{4};
    boost::asio::signal_set signals_{io_, SIGTERM, SIGINT};
    config::Node node_;
    std::unique_ptr<peer::PeerHub> hub_;
    struct HypervisorEntry {
        // Declared first, destroyed last: the backend's event handler publishes here until the
        // backend is gone.
        std::unique_ptr<checkers::DomainEvents> events;
        std::unique_ptr<hv::Hypervisor> hypervisor;
    };
    std::map<std::string, HypervisorEntry> hypervisors_;
    std::vector<std::unique_ptr<ModuleHost>> modules_;
    std::unique_ptr<services::AdminServer> admin_;
    std::unique_ptr<services::HealthServer> health_;
    bool stopped_ = false;
};

}  // namespace vmha::daemon
