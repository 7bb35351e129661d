#include "module_host.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include <boost/asio/post.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <checkers/factory.h>
#include <vmha/hypervisor/recover.h>

#include "asio_clock.h"
#include "file_store.h"

namespace vmha::daemon {
namespace {

using module::DataState;
using module::Link;

std::uint64_t parse_generation(const nlohmann::json& j) {
    if (!j.is_string()) return 0;
    const std::string s = j.get<std::string>();
    if (s == "none") return imagesync::meta::kNoGeneration;
    if (s == "JustCreated") return imagesync::meta::kJustCreated;
    return std::strtoull(s.c_str(), nullptr, 16);
}

// imagesync's `status` reply, folded to what the module runner reads.
module::ImagesyncStatus fold_status(const nlohmann::json& j) {
    module::ImagesyncStatus s;
    s.up = true;
    s.primary = j.value("role", "") == "primary";
    s.data = module::parse_data_state(j.value("data_state", "Unknown")).value_or(DataState::unknown);
    const std::string connection = j.value("connection", "");
    const std::string why = j.value("connection_reason", "");
    if (connection == "connected") s.link = Link::connected;
    else if (connection == "sync_source") s.link = Link::sync_source;
    else if (connection == "sync_target") s.link = Link::sync_target;
    else if (connection == "standalone" && why.rfind("split_brain", 0) == 0) s.link = Link::split_brain;
    else if (connection == "standalone" && !why.empty() && why.find("disconnect") == std::string::npos)
        s.link = Link::refused;
    else s.link = Link::down;
    s.dirty_bytes = j.value("dirty_bytes", std::uint64_t{0});
    if (auto r = j.find("resync"); r != j.end() && r->is_object()) {
        s.resync_total = r->value("total_bytes", std::uint64_t{0});
        s.resync_done = r->value("done_bytes", std::uint64_t{0});
    }
    s.crashed_primary = j.value("crashed_primary", false);
    s.fencing = j.value("fencing", false);
    if (auto g = j.find("generations"); g != j.end() && g->is_object()) {
        s.generations.current = parse_generation(g->value("current", nlohmann::json()));
        s.generations.bitmap = parse_generation(g->value("bitmap", nlohmann::json()));
        if (auto h = g->find("history"); h != g->end() && h->is_array()) {
            for (std::size_t i = 0; i < h->size() && i < s.generations.history.size(); ++i) {
                s.generations.history[i] = parse_generation((*h)[i]);
            }
        }
    }
    return s;
}

module::CheckerAction to_action(config::CheckerAction a) {
    switch (a) {
        case config::CheckerAction::restart: return module::CheckerAction::restart;
        case config::CheckerAction::failover: return module::CheckerAction::failover;
        case config::CheckerAction::wait: return module::CheckerAction::wait;
    }
    return module::CheckerAction::restart;
}

module::Liveness to_liveness(peer::Liveness l) {
    switch (l) {
        case peer::Liveness::unknown: return module::Liveness::unknown;
        case peer::Liveness::alive: return module::Liveness::alive;
        case peer::Liveness::lost: return module::Liveness::lost;
    }
    return module::Liveness::unknown;
}

}  // namespace

struct ModuleHost::Ports final : module::ImagesyncPort,
                                 module::PeerPort,
                                 module::Observer {
    boost::asio::io_context& io;
    boost::asio::thread_pool& pool;
    ModuleSetup setup;
    hv::Hypervisor& hypervisor;
    checkers::DomainEvents& events;
    peer::PeerHub& hub;
    std::string self;
    std::string peer_name;
    AsioClock clock;
    FileStore store;
    services::ImagesyncSupervisor supervisor;
    std::unique_ptr<peer::ModulePeer> peer;
    std::vector<std::unique_ptr<checkers::Checker>> checker_list;
    checkers::Checker* vm_checker = nullptr;
    std::shared_ptr<bool> live = std::make_shared<bool>(true);
    nlohmann::json vm_json = {{"state", "unknown"}, {"reason", ""}};

    // The VM port: blocking Hypervisor calls on the pool, results posted to the loop. While
    // vmha itself starts or stops the VM, the vm checker is suspended (not a failure).
    struct Vm final : module::VmPort {
        Ports& p;
        explicit Vm(Ports& ports) : p(ports) {}
        // `work` runs on the pool and must capture only values and the Hypervisor (which the
        // daemon keeps until the pool is joined), never `this`: the module may be gone by the
        // time it runs. `done` runs on the loop, only while the module lives.
        template <typename Work, typename Done>
        void blocking(Work work, Done done) {
            std::weak_ptr<bool> live = p.live;
            boost::asio::io_context& io = p.io;
            boost::asio::post(p.pool, [&io, live, work = std::move(work), done = std::move(done)]() mutable {
                auto result = work();
                boost::asio::post(io, [live, done = std::move(done), result = std::move(result)]() mutable {
                    if (live.expired()) return;
                    done(std::move(result));
                });
            });
        }
        hv::DomainSpec spec() const {
            hv::DomainSpec s;
            s.name = p.setup.module.vm.name;
            s.xml = p.setup.domain_xml;
            const auto paths = services::imagesync_paths(p.setup.module, p.setup.node);
            for (const auto& d : p.setup.module.disks) {
                hv::NbdDisk n;
                n.image_path = d.path;
                n.target = d.target;
                n.nbd_socket = paths.nbd_socket.string();
                n.export_name = d.export_name;
                n.format = d.format;
                s.disks.push_back(std::move(n));
            }
            return s;
        }
        void start(module::Done done) override {
            if (p.vm_checker) p.vm_checker->suspend();
            blocking([hv = &p.hypervisor, spec = spec()]() -> Status {
                auto st = hv->status(spec.name);
                if (st && st->runs()) return {};
                if (auto d = hv->define(spec); !d) return d;
                return hv->start(spec.name);
            }, [this, done](Status st) {
                if (p.vm_checker) p.vm_checker->resume();
                done(std::move(st));
            });
        }
        void stop(module::Done done) override {
            if (p.vm_checker) p.vm_checker->suspend();
            const auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(p.setup.module.vm.shutdown_timeout);
            blocking([hv = &p.hypervisor, name = p.setup.module.vm.name, timeout]() -> Status {
                return hv->shutdown(name, timeout);
            }, [this, done](Status st) {
                if (p.vm_checker) p.vm_checker->resume();
                done(std::move(st));
            });
        }
        void resume(module::Done done) override {
            blocking([hv = &p.hypervisor, name = p.setup.module.vm.name]() -> Status {
                return hv::recover_paused_guest(*hv, name, std::chrono::seconds(30));
            }, std::move(done));
        }
        void health(std::function<void(module::VmHealth, std::string)> done) override {
            blocking([hv = &p.hypervisor, name = p.setup.module.vm.name]() { return hv->status(name); },
                     [this, done](Result<hv::DomainStatus> st) {
                         if (!st) {
                             p.vm_json = {{"state", "unknown"}, {"reason", st.error().message}};
                             return done(module::VmHealth::unknown, st.error().message);
                         }
                         p.vm_json = {{"state", std::string(hv::to_string(st->state))}, {"reason", st->reason}};
                         const std::string why = fmt::format("domain \"{}\" is {} ({})", p.setup.module.vm.name,
                                                             hv::to_string(st->state), st->reason);
                         if (st->paused_on_io_error()) return done(module::VmHealth::paused_on_io_error, why);
                         if (st->active()) return done(module::VmHealth::running, why);
                         done(module::VmHealth::stopped, why);
                     });
        }
    } vm{*this};

    std::unique_ptr<module::ModuleRunner> runner;

    Ports(boost::asio::io_context& io_, boost::asio::thread_pool& pool_, ModuleSetup setup_,
          hv::Hypervisor& hv_, checkers::DomainEvents& events_, peer::PeerHub& hub_)
        : io(io_),
          pool(pool_),
          setup(std::move(setup_)),
          hypervisor(hv_),
          events(events_),
          hub(hub_),
          self(setup.node.name),
          peer_name(setup.module.peer_of(self) ? setup.module.peer_of(self)->name : ""),
          clock(io_),
          store(std::filesystem::path(setup.node.state_dir) / setup.module.name / "module.json"),
          supervisor(io_, setup.module, setup.node, setup.supervisor,
                     [this](const services::ImagesyncSupervisor::Event& e) { on_supervisor(e); }) {
        module::RunnerConfig c;
        c.module = setup.module.name;
        c.self = self;
        c.peer = peer_name;
        const std::string& preferred = setup.module.failback.preferred_node.empty()
                                           ? setup.module.nodes.front().name
                                           : setup.module.failback.preferred_node;
        c.preferred = preferred == self;
        c.startup_grace = std::chrono::duration_cast<module::Duration>(2 * setup.module.heartbeat.timeout +
                                                                       setup.module.replication.connect_timeout);
        c.imagesync_settle = std::chrono::duration_cast<module::Duration>(setup.module.replication.connect_timeout);
        c.heartbeat_timeout = std::chrono::duration_cast<module::Duration>(setup.module.heartbeat.timeout);
        c.replication_timeout = std::chrono::duration_cast<module::Duration>(setup.module.replication.timeout);
        c.heartbeat_interval = std::chrono::duration_cast<module::Duration>(setup.module.heartbeat.interval);
        c.restart_attempts = setup.module.restart.attempts;
        c.claim_seed = std::random_device{}();
        c.restart_window = std::chrono::duration_cast<module::Duration>(setup.module.restart.window);
        c.automatic_failback = setup.module.failback.mode == config::FailbackMode::automatic &&
                               !setup.module.failback.preferred_node.empty();
        c.failback_stable = std::chrono::duration_cast<module::Duration>(setup.module.failback.stable_for);
        runner = std::make_unique<module::ModuleRunner>(c, clock, *this, vm, *this, store, *this);
    }

    ~Ports() override { *live = false; }

    // --- supervisor
    void on_supervisor(const services::ImagesyncSupervisor::Event& e) {
        using K = services::ImagesyncSupervisor::Event::Kind;
        switch (e.kind) {
            case K::running:
                spdlog::info("module \"{}\": imagesyncd {} (pid {})", setup.module.name,
                             e.reattached ? "re-attached" : "running", e.pid);
                break;
            case K::died:
                spdlog::warn("module \"{}\": imagesyncd died: {}", setup.module.name, e.reason);
                break;
            case K::restarting:
                spdlog::info("module \"{}\": restarting imagesyncd in {} ms", setup.module.name, e.delay.count());
                break;
            case K::stopped:
                spdlog::info("module \"{}\": imagesyncd stopped", setup.module.name);
                break;
        }
    }

    // --- ImagesyncPort
    template <typename Done>
    static auto to_status(Done done) {
        return [done = std::move(done)](Result<nlohmann::json> r) {
            if (!r) return done(Status(std::move(r).error()));
            done(Status{});
        };
    }
    void ensure_running(module::Done done) override {
        using S = services::ImagesyncSupervisor::State;
        Status st;
        if (supervisor.state() == S::idle || supervisor.state() == S::stopped) st = supervisor.start();
        boost::asio::post(io, [done, st]() { done(st); });
    }
    void stop(module::Done done) override { supervisor.stop(std::move(done)); }
    void status(std::function<void(module::ImagesyncStatus)> done) override {
        using S = services::ImagesyncSupervisor::State;
        if (supervisor.state() == S::idle || supervisor.state() == S::stopped) {
            boost::asio::post(io, [done]() { done(module::ImagesyncStatus{}); });
            return;
        }
        supervisor.control().status([this, done](Result<nlohmann::json> r) {
            if (!r) return done(module::ImagesyncStatus{});
            auto s = fold_status(*r);
            const pid_t pid = supervisor.pid();
            s.instance = pid > 0 ? static_cast<std::uint64_t>(pid) : 0;
            done(s);
        });
    }
    void promote(module::Done done) override { supervisor.control().promote(false, to_status(std::move(done))); }
    void demote(module::Done done) override { supervisor.control().demote(to_status(std::move(done))); }
    void connect(module::Done done) override { supervisor.control().connect(to_status(std::move(done))); }
    void outdate(module::Done done) override { supervisor.control().outdate(to_status(std::move(done))); }
    void resume_io(module::Done done) override {
        supervisor.control().request({{"verb", "resume-io"}}, to_status(std::move(done)));
    }
    void declare_initial_data(module::Done done) override {
        spdlog::warn("module \"{}\": neither copy holds data yet; the images on {} become the data",
                     setup.module.name, self);
        supervisor.control().promote(true, [this, done](Result<nlohmann::json> r) {
            if (!r) return done(Status(std::move(r).error()));
            supervisor.control().demote(to_status(done));
        });
    }

    // --- PeerPort
    void send(const nlohmann::json& message) override {
        if (peer) (void)peer->send(message);
    }

    // --- Observer
    void transition(module::State from, module::State to, int rule, const std::string& reason) override {
        spdlog::info("module \"{}\": {} -> {} (rule {}): {}", setup.module.name, module::to_string(from),
                     module::to_string(to), rule, reason);
    }
    void note(const std::string& what) override { spdlog::info("module \"{}\": {}", setup.module.name, what); }
    void starting_vm() override {
        spdlog::info("module \"{}\": starting domain \"{}\"", setup.module.name, setup.module.vm.name);
    }

    // --- checkers
    Status start_checkers() {
        for (const auto& c : setup.module.checkers) {
            checkers::CheckerContext ctx;
            ctx.executor = io.get_executor();
            ctx.blocking = &pool;
            ctx.hypervisor = &hypervisor;
            ctx.domain = setup.module.vm.name;
            ctx.events = &events;
            auto made = checkers::make_checker(c, ctx);
            if (!made) {
                return Error(made.error().code, fmt::format("module \"{}\": checker \"{}\": {}", setup.module.name,
                                                            c.name, made.error().message));
            }
            checkers::Checker* raw = made->get();
            if (c.kind == config::CheckerKind::vm) vm_checker = raw;
            const std::string name = c.name;
            const auto action = to_action(c.action);
            const bool is_vm = c.kind == config::CheckerKind::vm;
            std::weak_ptr<bool> l = live;
            raw->start([this, l, name, action, is_vm](const checkers::CheckResult& r) {
                if (l.expired()) return;
                if (is_vm && r.cause == checkers::Cause::paused_on_io_error) {
                    runner->on_vm_health(module::VmHealth::paused_on_io_error, r.reason);
                    return;
                }
                if (r.verdict == checkers::Verdict::unknown) return;
                const bool failed = r.verdict == checkers::Verdict::failed;
                if (failed) spdlog::warn("module \"{}\": checker \"{}\" failed: {}", setup.module.name, name, r.reason);
                runner->on_checker(name, action, failed, r.reason);
            });
            checker_list.push_back(std::move(*made));
        }
        return {};
    }
};

ModuleHost::ModuleHost(boost::asio::io_context& io, boost::asio::thread_pool& pool, ModuleSetup setup,
                       hv::Hypervisor& hypervisor, checkers::DomainEvents& events, peer::PeerHub& hub)
    : ports_(std::make_unique<Ports>(io, pool, std::move(setup), hypervisor, events, hub)) {}

ModuleHost::~ModuleHost() { shutdown(); }

const std::string& ModuleHost::name() const { return ports_->setup.module.name; }
module::ModuleRunner& ModuleHost::runner() { return *ports_->runner; }

Status ModuleHost::start() {
    Ports& p = *ports_;
    peer::PeerEvents ev;
    std::weak_ptr<bool> l = p.live;
    ev.on_channel = [&p, l](bool up, const std::string& reason) {
        if (l.expired()) return;
        spdlog::info("module \"{}\": control channel to {} {}: {}", p.setup.module.name, p.peer_name,
                     up ? "up" : "down", reason);
        p.runner->on_peer_channel(up);
    };
    ev.on_message = [&p, l](const nlohmann::json& m) {
        if (l.expired()) return;
        p.runner->on_peer_message(m);
    };
    ev.on_liveness = [&p, l](peer::Liveness lv, const std::string& reason) {
        if (l.expired()) return;
        spdlog::log(lv == peer::Liveness::lost ? spdlog::level::warn : spdlog::level::info,
                    "module \"{}\": {}", p.setup.module.name, reason);
        p.runner->on_peer_liveness(to_liveness(lv));
    };
    ev.on_refused = [&p, l](const std::string& reason) {
        if (l.expired()) return;
        spdlog::error("module \"{}\": pairing with {} refused: {}", p.setup.module.name, p.peer_name, reason);
        p.runner->on_peer_refused(reason);
    };
    auto attached = p.hub.attach(p.setup.module, p.setup.module_yaml, std::move(ev));
    if (!attached) return std::move(attached).error();
    p.peer = std::move(*attached);
    if (p.store.load().started) {
        if (auto st = p.supervisor.start(); !st) return st;
    }
    if (auto st = p.start_checkers(); !st) return st;
    p.peer->start();
    p.runner->start();
    return {};
}

void ModuleHost::shutdown() {
    if (!ports_) return;
    Ports& p = *ports_;
    for (auto& c : p.checker_list) c->stop();
    if (p.peer) p.peer->stop();
    p.supervisor.detach();
}

nlohmann::json ModuleHost::status() const {
    Ports& p = *ports_;
    nlohmann::json j = p.runner->status_json();
    j["vm"] = p.vm_json;
    j["vm"]["domain"] = p.setup.module.vm.name;
    if (p.peer) {
        const peer::PeerStatus ps = p.peer->status();
        j["peer"]["liveness_reason"] = ps.liveness_reason;
        j["peer"]["channel_reason"] = ps.channel_reason;
        if (!ps.refused.empty()) j["peer"]["refused"] = ps.refused;
        nlohmann::json paths = nlohmann::json::array();
        for (const auto& path : ps.paths) {
            paths.push_back({{"name", path.name},
                             {"bound", path.bound},
                             {"heard_ms_ago", path.since_heard ? nlohmann::json(path.since_heard->count()) : nlohmann::json(nullptr)},
                             {"rejected", path.rejected}});
        }
        j["peer"]["paths"] = std::move(paths);
    }
    j["imagesyncd"] = {{"state", std::string(services::to_string(p.supervisor.state()))},
                       {"pid", p.supervisor.pid()}};
    return j;
}

void ModuleHost::swap(std::function<void(Status)> done) { ports_->runner->op_swap(std::move(done)); }

Status ModuleHost::start_module() {
    Ports& p = *ports_;
    using S = services::ImagesyncSupervisor::State;
    if (p.supervisor.state() == S::idle || p.supervisor.state() == S::stopped) {
        if (auto st = p.supervisor.start(); !st) return st;
    }
    return p.runner->op_start();
}

void ModuleHost::stop_module(std::function<void(Status)> done) { ports_->runner->op_stop(std::move(done)); }

}  // namespace vmha::daemon
