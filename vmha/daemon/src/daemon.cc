#include "daemon.h"

#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <vmha/hypervisor/libvirt.h>

namespace vmha::daemon {
namespace {

Result<std::string> read_file(const std::string& path, const std::string& what) {
    std::ifstream in(path);
    if (!in) return Error(errc::unreadable, fmt::format("cannot read {} \"{}\"", what, path));
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

}  // namespace

Daemon::Daemon(DaemonOptions options) : options_(std::move(options)) {}

Daemon::~Daemon() { stop(); }

Result<hv::Hypervisor*> Daemon::hypervisor_for(const std::string& uri) {
    auto it = hypervisors_.find(uri);
    if (it != hypervisors_.end()) return it->second.hypervisor.get();
    auto made = hv::make_libvirt_hypervisor(uri);
    if (!made) return std::move(made).error();
    HypervisorEntry e;
    e.hypervisor = std::move(*made);
    e.events = std::make_unique<checkers::DomainEvents>();
    checkers::DomainEvents* events = e.events.get();
    if (auto st = e.hypervisor->watch([events](const hv::LifecycleEvent& ev) { events->publish(ev); }); !st) {
        spdlog::warn("lifecycle events from \"{}\" unavailable ({}); the vm checkers poll", uri, st.error().message);
    }
    hv::Hypervisor* raw = e.hypervisor.get();
    hypervisors_.emplace(uri, std::move(e));
    return raw;
}

Status Daemon::start() {
    config::Findings findings;
    auto setup = config::load_node_setup(options_.node_file.string(), findings);
    for (const auto& f : findings.items) {
        if (f.severity == config::Severity::error) spdlog::error("{}", f.to_string());
        else spdlog::warn("{}", f.to_string());
    }
    if (!setup || findings.has_errors()) {
        return Error(errc::invalid_config, fmt::format("the configuration in \"{}\" is invalid; vmhad "
                                                       "does not start on it", options_.node_file.string()));
    }
    node_ = setup->node;
    if (!node_.tls) {
        return Error(errc::invalid_config,
                     fmt::format("node file \"{}\" has no tls section: the control channel between the "
                                 "nodes needs the cluster CA and this node's certificate and key "
                                 "(configs/vmha-certs.sh makes them)", options_.node_file.string()));
    }
    auto hub = peer::PeerHub::create(io_.get_executor(), node_);
    if (!hub) return std::move(hub).error();
    hub_ = std::move(*hub);

    for (const auto& m : setup->modules) {
        ModuleSetup ms;
        ms.module = m;
        ms.node = node_;
        auto yaml = read_file(m.where.file, "module file");
        if (!yaml) return std::move(yaml).error();
        ms.module_yaml = std::move(*yaml);
        if (m.vm.hypervisor == config::HypervisorKind::hyperv) {
            return Error(errc::unsupported, fmt::format("module \"{}\": the Hyper-V backend is not in this "
                                                        "build", m.name));
        }
        auto xml = read_file(m.vm.domain_xml, fmt::format("module \"{}\": domain XML", m.name));
        if (!xml) return std::move(xml).error();
        ms.domain_xml = std::move(*xml);
        if (!options_.imagesyncd.empty()) ms.supervisor.imagesyncd = options_.imagesyncd;
        ms.supervisor.log_level = node_.log_level;
        const config::ModuleNode* self = m.node(node_.name);
        if (!self) {
            return Error(errc::invalid_config, fmt::format("module \"{}\" does not name node \"{}\"", m.name, node_.name));
        }
        auto hv = hypervisor_for(self->hypervisor_uri);
        if (!hv) return std::move(hv).error();
        modules_.push_back(std::make_unique<ModuleHost>(io_, pool_, std::move(ms), **hv,
                                                        *hypervisors_[self->hypervisor_uri].events, *hub_));
        // Requests the peer forwards for this module are answered as if asked here.
        modules_.back()->serve_forwarded([this](nlohmann::json request, Reply done) {
            if (!request["verb"].is_string() || !request["module"].is_string()) {
                return done(Error(errc::invalid_argument, "a forwarded request needs a verb and a module"));
            }
            const std::string verb = request["verb"].get<std::string>();
            static const std::set<std::string> forwardable = {"restart", "swap", "resync", "verify", "progress",
                                                              "failover"};
            if (!forwardable.count(verb)) {
                return done(Error(errc::invalid_argument,
                                  fmt::format("\"{}\" is not a verb the peer may forward", verb)));
            }
            handle(verb, request, std::move(done));
        });
    }

    admin_ = std::make_unique<services::AdminServer>(io_, node_.admin_socket, *this);
    if (auto st = admin_->listen(); !st) return st;
    health_ = std::make_unique<services::HealthServer>(io_, [this](const std::string& name) -> std::optional<bool> {
        ModuleHost* m = find(name);
        if (!m) return std::nullopt;
        return module::serves_clients(m->runner().state());
    });
    std::set<std::pair<std::string, std::uint16_t>> bound;
    for (const auto& m : setup->modules) {
        const config::ModuleNode* self = m.node(node_.name);
        const std::uint16_t port = m.health_check.port != 0 ? m.health_check.port : services::safekit_health_port;
        const std::string address = self->address.text;
        if (!bound.insert({address, port}).second) continue;
        if (auto st = health_->listen(address, port, m.health_check.allow); !st) return st;
    }

    for (auto& m : modules_) {
        if (auto st = m->start(); !st) return st;
        spdlog::info("module \"{}\" loaded", m->name());
    }
    admin_->start();
    health_->start();
    signals_.async_wait([this](const boost::system::error_code& ec, int sig) {
        if (ec) return;
        spdlog::info("signal {}: vmhad stops; imagesyncd and the VMs keep running", sig);
        stop();
    });
    spdlog::info("vmhad on node \"{}\": {} module(s), admin socket {}", node_.name, modules_.size(),
                 node_.admin_socket);
    return {};
}

int Daemon::run() {
    io_.run();
    return 0;
}

void Daemon::stop() {
    if (stopped_) return;
    stopped_ = true;
    if (admin_) admin_->stop();
    if (health_) health_->stop();
    for (auto& m : modules_) m->shutdown();
    // Hypervisor calls in flight finish first (their results are then dropped): the pool joins
    // before the modules and hypervisors they use go away.
    pool_.join();
    modules_.clear();
    hub_.reset();
    signals_.cancel();
    io_.stop();
}

ModuleHost* Daemon::find(const std::string& module) {
    for (auto& m : modules_) {
        if (m->name() == module) return m.get();
    }
    return nullptr;
}

}  // namespace vmha::daemon
