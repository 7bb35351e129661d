#include "module_host.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <checkers/factory.h>
#include <checkers/run_command.h>
#include <vmha/hypervisor/recover.h>
#include <vmha/lease/from_config.h>

#include "asio_clock.h"
#include "file_store.h"
#include "journal.h"

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
    if (auto b = j.find("split_brain"); b != j.end() && b->is_object()) s.split_brain = *b;
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
    Journal journal;
    nlohmann::json last_imagesync;             // imagesyncd's last status reply, whole
    std::map<std::string, bool> checker_failed;  // last verdict per checker, for the journal
    // Requests forwarded to the peer, waiting for its answer.
    struct Forwarded {
        std::function<void(Result<nlohmann::json>)> done;
        std::shared_ptr<boost::asio::steady_timer> timer;
    };
    std::map<std::uint64_t, Forwarded> forwarded;
    std::uint64_t next_forward_id = 0;
    ModuleHost::AdminCall serve_forwarded;

    // The module's lease (a `witness` section): the backend from the module file and the node's
    // TLS files, keyed by the pair and the module, held in this node's name.
    std::unique_ptr<lease::LeaseBackend> lease_backend;
    Status lease_setup;  // why the backend could not be made (start() reports it)
    struct Lease final : module::LeasePort {
        Ports& p;
        lease::LeaseKey key;
        explicit Lease(Ports& ports) : p(ports) {}
        void acquire(module::Duration ttl, std::function<void(Result<lease::LeaseState>)> done) override {
            if (!p.lease_backend) {
                Status why = p.lease_setup;
                boost::asio::post(p.io, [done, why]() { done(why.error()); });
                return;
            }
            p.lease_backend->acquire(key, p.self, ttl, std::move(done));
        }
        void release(module::Done done) override {
            if (!p.lease_backend) {
                boost::asio::post(p.io, [done]() { done({}); });
                return;
            }
            p.lease_backend->release(key, p.self, std::move(done));
        }
    } lease_port{*this};

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
        void power_off(module::Done done) override {
            if (p.vm_checker) p.vm_checker->suspend();
            blocking([hv = &p.hypervisor, name = p.setup.module.vm.name]() -> Status {
                return hv->destroy(name);
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

    // The fencing hook (the module's `fencing` section): its command, placeholders filled in,
    // run by the command checker's runner.
    struct Fence final : module::FencePort {
        Ports& p;
        checkers::CommandRunner command;
        explicit Fence(Ports& ports) : p(ports), command(ports.io.get_executor()) {}
        void fence_peer(module::Done done) override {
            const config::Fencing& f = *p.setup.module.fencing;
            std::vector<std::string> argv;
            for (std::string arg : f.command) {
                for (const auto& [key, value] : {std::pair<std::string, std::string>{"{peer}", p.peer_name},
                                                 {"{self}", p.self},
                                                 {"{module}", p.setup.module.name}}) {
                    for (auto pos = arg.find(key); pos != std::string::npos; pos = arg.find(key, pos + value.size())) {
                        arg.replace(pos, key.size(), value);
                    }
                }
                argv.push_back(std::move(arg));
            }
            spdlog::warn("module \"{}\": fencing {} before starting the VM without it: {}", p.setup.module.name,
                         p.peer_name, fmt::join(argv, " "));
            command.run(argv, std::chrono::duration_cast<std::chrono::milliseconds>(f.timeout),
                        [name = p.setup.module.name, done = std::move(done)](Status st) {
                            if (!st) spdlog::error("module \"{}\": the fencing hook failed: {}", name, st.error().message);
                            done(std::move(st));
                        });
        }
    } fence{*this};

    // The scheduler's view of this module (vmha/module/scheduler.h).
    struct Sched final : module::SchedulePort {
        Ports& p;
        explicit Sched(Ports& ports) : p(ports) {}
        bool runs_vm() const override { return module::runs_vm(p.runner->state()); }
        bool peer_runs_vm() const override { return p.peer_runs_vm(); }
        Status swap_refusal() const override { return p.runner->swap_refusal(); }
        void swap(module::Done done) override { p.runner->op_swap(std::move(done)); }
        void record(const module::ScheduleEvent& e) override {
            const std::string message =
                fmt::format("{} (due {}): {}{}", e.job, p.scheduler ? p.scheduler_zone.format(e.due) : "",
                            e.outcome == module::JobOutcome::pending ? "" : std::string(module::to_string(e.outcome)) + ": ",
                            e.reason);
            const bool bad = e.outcome == module::JobOutcome::skipped || e.outcome == module::JobOutcome::failed;
            spdlog::log(bad ? spdlog::level::warn : spdlog::level::info, "module \"{}\": scheduled {}",
                        p.setup.module.name, message);
            p.journal.append({{"kind", "schedule"},
                              {"job", e.job},
                              {"due", p.scheduler_zone.format(e.due)},
                              {"outcome", std::string(module::to_string(e.outcome))},
                              {"reason", e.reason},
                              {"message", message}});
        }
        void changed() override { p.send_schedule(); }
    } sched{*this};
    ScheduleFile schedule_file;
    config::TimeZone scheduler_zone = config::TimeZone::utc();
    std::unique_ptr<module::Scheduler> scheduler;
    std::unique_ptr<boost::asio::steady_timer> schedule_timer;

    static config::SysSeconds wall_now() {
        return std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
    }

    bool peer_runs_vm() const { return runner->peer_runs_vm(); }

    void send_schedule() {
        if (!scheduler || !peer || !peer->status().channel_up) return;
        nlohmann::json m = scheduler->sync_message();
        m["type"] = "schedule";
        peer->send(m);
    }

    void merge_schedule(const nlohmann::json& m) {
        if (!scheduler) return;
        auto r = scheduler->merge(m, wall_now());
        if (!r) {
            spdlog::warn("module \"{}\": schedule from {}: {}", setup.module.name, peer_name, r.error().message);
        } else if (*r > 0) {
            spdlog::info("module \"{}\": {} scheduled swap(s) taken from {}", setup.module.name, *r, peer_name);
        }
    }

    // The scheduler, from the module's failback section and the saved plan. A saved plan that
    // cannot be read is set aside (renamed, reported), not guessed at: the module still runs.
    Status start_scheduler() {
        const auto& fb = setup.module.failback;
        auto zone = config::TimeZone::load(fb.timezone);
        if (!zone) {
            return Error(zone.error().code, fmt::format("module \"{}\": failback.timezone: {}", setup.module.name,
                                                        zone.error().message));
        }
        scheduler_zone = *zone;
        module::SchedulerConfig c;
        c.module = setup.module.name;
        c.self = self;
        c.peer = peer_name;
        c.preferred = fb.preferred_node;
        if (fb.mode == config::FailbackMode::scheduled) c.failback = fb.schedule;
        c.zone = *zone;
        scheduler = std::make_unique<module::Scheduler>(c, sched, schedule_file);
        if (auto st = scheduler->load(wall_now()); !st) {
            const auto path = schedule_file.path();
            const auto aside = path.string() + fmt::format(".unusable-{}", wall_now().time_since_epoch().count());
            std::error_code ec;
            std::filesystem::rename(path, aside, ec);
            spdlog::error("module \"{}\": {}; set aside as {}; starting with an empty schedule",
                          setup.module.name, st.error().message, aside);
            journal.append({{"kind", "note"},
                            {"message", fmt::format("the saved schedule was unusable ({}); set aside as {}",
                                                    st.error().message, aside)}});
            scheduler = std::make_unique<module::Scheduler>(c, sched, schedule_file);
            if (auto again = scheduler->load(wall_now()); !again) return again;
        }
        schedule_timer = std::make_unique<boost::asio::steady_timer>(io);
        tick_schedule();
        return {};
    }

    void tick_schedule() {
        scheduler->tick(wall_now());
        schedule_timer->expires_after(std::chrono::seconds(1));
        schedule_timer->async_wait([this, l = std::weak_ptr<bool>(live)](const boost::system::error_code& ec) {
            if (ec || l.expired()) return;
            tick_schedule();
        });
    }

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
                     [this](const services::ImagesyncSupervisor::Event& e) { on_supervisor(e); }),
          journal(std::filesystem::path(setup.node.state_dir) / setup.module.name / "journal.jsonl"),
          schedule_file(std::filesystem::path(setup.node.state_dir) / setup.module.name / "schedule.json") {
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
        if (setup.module.witness) {
            const config::Witness& w = *setup.module.witness;
            module::RunnerConfig::Lease l;
            l.ttl = std::chrono::duration_cast<module::Duration>(w.lease);
            l.timing = lease::timing_of(w);
            c.lease = l;
            lease_port.key = lease::key_of(setup.module);
            auto made = lease::make_backend(io.get_executor(), w, setup.node);
            if (made) {
                lease_backend = std::move(*made);
            } else {
                // The runner still obeys the lease rules: it never holds the lease.
                lease_setup = Error(made.error().code, fmt::format("module \"{}\": witness: {}",
                                                                   setup.module.name, made.error().message));
            }
        }
        runner = std::make_unique<module::ModuleRunner>(c, clock, *this, vm, *this, store, *this, &lease_port,
                                                        setup.module.fencing ? &fence : nullptr);
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
            last_imagesync = *r;
            auto s = fold_status(*r);
            const pid_t pid = supervisor.pid();
            s.instance = pid > 0 ? static_cast<std::uint64_t>(pid) : 0;
            done(s);
        });
    }
    void promote(module::Done done) override { supervisor.control().promote(false, to_status(std::move(done))); }
    void promote_forced(module::Done done) override {
        supervisor.control().promote(true, to_status(std::move(done)));
    }
    void demote(module::Done done) override { supervisor.control().demote(to_status(std::move(done))); }
    void connect(module::Done done) override { supervisor.control().connect(to_status(std::move(done))); }
    void outdate(module::Done done) override { supervisor.control().outdate(to_status(std::move(done))); }
    void resume_io(module::Done done) override {
        supervisor.control().request({{"verb", "resume-io"}}, to_status(std::move(done)));
    }
    void discard_unacknowledged(module::Done done) override {
        supervisor.control().request({{"verb", "discard-unacknowledged"}}, to_status(std::move(done)));
    }
    void write_lease(module::Duration valid_for, module::Done done) override {
        supervisor.control().request({{"verb", "write-lease"}, {"valid_for_ms", valid_for.count()}},
                                     to_status(std::move(done)));
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
        journal.append({{"kind", "transition"},
                        {"from", std::string(module::to_string(from))},
                        {"to", std::string(module::to_string(to))},
                        {"rule", rule},
                        {"reason", reason}});
    }
    void note(const std::string& what) override {
        spdlog::info("module \"{}\": {}", setup.module.name, what);
        journal.append({{"kind", "note"}, {"message", what}});
    }

    // --- forwarding (ModuleHost::forward)
    void answer_forwarded(const nlohmann::json& m) {
        const std::uint64_t id = m.value("id", std::uint64_t{0});
        auto reply = [this, id, l = std::weak_ptr<bool>(live)](Result<nlohmann::json> r) {
            if (l.expired() || !peer) return;
            nlohmann::json out = {{"type", "admin_reply"}, {"id", id}, {"ok", r.ok()}};
            if (r) {
                out["result"] = std::move(*r);
            } else {
                out["code"] = r.error().code.category() == error_category()
                                  ? std::string(errc_name(static_cast<errc>(r.error().code.value())))
                                  : std::string("internal");
                out["error"] = r.error().message;
            }
            (void)peer->send(std::move(out));
        };
        auto request = m.find("request");
        if (request == m.end() || !request->is_object() || !serve_forwarded) {
            return reply(Error(errc::invalid_argument, "a forwarded request without a request object"));
        }
        nlohmann::json r = *request;
        r["forwarded_from"] = peer_name;  // the TLS-authenticated peer, whatever it wrote
        serve_forwarded(std::move(r), reply);
    }
    void complete_forwarded(const nlohmann::json& m) {
        auto it = forwarded.find(m.value("id", std::uint64_t{0}));
        if (it == forwarded.end()) return;  // timed out already
        auto f = std::move(it->second);
        forwarded.erase(it);
        f.timer->cancel();
        if (m.value("ok", false)) return f.done(m.contains("result") ? m["result"] : nlohmann::json::object());
        const auto code = services::errc_from_name(m.value("code", "")).value_or(errc::internal);
        f.done(Error(code, m.value("error", std::string("the peer refused"))));
    }
    void fail_forwarded(const std::string& why) {
        auto all = std::move(forwarded);
        forwarded.clear();
        for (auto& [id, f] : all) {
            f.timer->cancel();
            f.done(Error(errc::connection_lost, why));
        }
    }
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
                // Journaled while this node runs the VM (elsewhere a vm checker only says the
                // domain is not here).
                auto known = checker_failed.find(name);
                const bool changed = known == checker_failed.end() ? failed : known->second != failed;
                if (changed && module::runs_vm(runner->state())) {
                    journal.append({{"kind", "checker"},
                                    {"checker", name},
                                    {"verdict", failed ? "failed" : "healthy"},
                                    {"reason", r.reason}});
                }
                checker_failed[name] = failed;
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
        if (!up) p.fail_forwarded(fmt::format("the control channel to {} went down: {}", p.peer_name, reason));
        p.runner->on_peer_channel(up);
        if (up) p.send_schedule();
    };
    ev.on_message = [&p, l](const nlohmann::json& m) {
        if (l.expired()) return;
        const std::string type = m.is_object() ? m.value("type", "") : "";
        if (type == "admin") return p.answer_forwarded(m);
        if (type == "admin_reply") return p.complete_forwarded(m);
        if (type == "schedule") return p.merge_schedule(m);
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
    if (!p.lease_setup) return p.lease_setup;
    if (p.store.load().started) {
        if (auto st = p.supervisor.start(); !st) return st;
    }
    if (auto st = p.start_checkers(); !st) return st;
    if (auto st = p.start_scheduler(); !st) return st;
    p.peer->start();
    p.runner->start();
    return {};
}

void ModuleHost::shutdown() {
    if (!ports_) return;
    Ports& p = *ports_;
    for (auto& c : p.checker_list) c->stop();
    if (p.schedule_timer) p.schedule_timer->cancel();
    if (p.peer) p.peer->stop();
    if (p.lease_backend) p.lease_backend->stop();
    p.supervisor.detach();
    p.fail_forwarded("vmhad is stopping");
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
    j["verify"] = p.last_imagesync.is_object() && p.last_imagesync.contains("verify")
                      ? p.last_imagesync["verify"]
                      : nlohmann::json(nullptr);
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

void ModuleHost::restart(std::function<void(Status)> done) { ports_->runner->op_restart(std::move(done)); }

void ModuleHost::prim(bool force, std::function<void(Status)> done) {
    Ports& p = *ports_;
    using S = services::ImagesyncSupervisor::State;
    // Refused before anything starts: a refused `prim` leaves a stopped module stopped.
    if (auto st = p.runner->prim_refusal(force); !st) return done(st);
    if (!force && !p.runner->imagesync().up && (p.supervisor.state() == S::idle || p.supervisor.state() == S::stopped)) {
        // Stopped: `prim` starts the module; imagesyncd runs first.
        if (auto st = p.supervisor.start(); !st) return done(st);
    }
    p.runner->op_prim(force, std::move(done));
}

nlohmann::json ModuleHost::prim_preview() const { return ports_->runner->prim_preview(); }

Status ModuleHost::prim_refusal(bool force) const { return ports_->runner->prim_refusal(force); }

Status ModuleHost::second() {
    Ports& p = *ports_;
    using S = services::ImagesyncSupervisor::State;
    if (p.supervisor.state() == S::idle || p.supervisor.state() == S::stopped) {
        if (auto st = p.supervisor.start(); !st) return st;
    }
    return p.runner->op_second();
}

Status ModuleHost::set_failover(bool on) { return ports_->runner->op_failover(on); }

void ModuleHost::resync(bool full, std::function<void(Result<nlohmann::json>)> done) {
    Ports& p = *ports_;
    if (!module::runs_vm(p.runner->state())) {
        return done(Error(errc::invalid_argument,
                          fmt::format("module \"{}\" does not run the VM on {}; a resync starts where it runs",
                                      p.setup.module.name, p.self)));
    }
    p.supervisor.control().resync(full, [&p, full, done](Result<nlohmann::json> r) {
        if (!r) return done(std::move(r).error());
        p.last_imagesync = *r;
        done(nlohmann::json{{"module", p.setup.module.name},
                            {"node", p.self},
                            {"full", full},
                            {"connection", r->value("connection", "")},
                            {"dirty_bytes", r->value("dirty_bytes", std::uint64_t{0})}});
    });
}

void ModuleHost::verify(bool mark, std::function<void(Result<nlohmann::json>)> done) {
    Ports& p = *ports_;
    if (!module::runs_vm(p.runner->state())) {
        return done(Error(errc::invalid_argument,
                          fmt::format("module \"{}\" does not run the VM on {}; a verify runs where it runs",
                                      p.setup.module.name, p.self)));
    }
    p.supervisor.control().verify(mark, [&p, done](Result<nlohmann::json> r) {
        if (!r) return done(std::move(r).error());
        nlohmann::json out = *r;
        out.erase("ok");
        out["module"] = p.setup.module.name;
        out["node"] = p.self;
        done(std::move(out));
    });
}

nlohmann::json ModuleHost::progress() const {
    const Ports& p = *ports_;
    const nlohmann::json& s = p.last_imagesync;
    std::uint64_t total = 0;
    if (s.is_object() && s.contains("exports") && s["exports"].is_array()) {
        for (const auto& e : s["exports"]) total += e.value("size", std::uint64_t{0});
    }
    auto key = [&](const char* k) {
        return s.is_object() && s.contains(k) ? s[k] : nlohmann::json(nullptr);
    };
    return {{"module", p.setup.module.name},
            {"node", p.self},
            {"state", std::string(module::to_string(p.runner->state()))},
            {"connection", s.is_object() ? s.value("connection", "down") : "down"},
            {"dirty_bytes", s.is_object() ? s.value("dirty_bytes", std::uint64_t{0}) : 0},
            {"size_bytes", total},
            {"resync", key("resync")},
            {"verify", key("verify")}};
}

Journal& ModuleHost::journal() { return ports_->journal; }

Result<nlohmann::json> ModuleHost::schedule_swap(const std::string& when, const std::string& to,
                                                 const std::string& by) {
    Ports& p = *ports_;
    const auto now = Ports::wall_now();
    auto at = p.scheduler->parse_when(when, now);
    if (!at) return std::move(at).error();
    std::string target = to;
    if (target.empty()) {
        // To the node that does not run the VM now.
        if (module::runs_vm(p.runner->state())) {
            target = p.peer_name;
        } else if (p.peer_runs_vm()) {
            target = p.self;
        } else {
            return Error(errc::invalid_argument,
                         fmt::format("module \"{}\" runs the VM on neither node now; say where it should move "
                                     "with --to {} or --to {}", p.setup.module.name, p.self, p.peer_name));
        }
    }
    std::random_device rd;
    const std::string id = fmt::format("{:08x}", rd());
    auto s = p.scheduler->add_swap(id, *at, target, by, now);
    if (!s) return std::move(s).error();
    const bool told = channel_up();
    return nlohmann::json{{"module", p.setup.module.name},
                          {"node", p.self},
                          {"id", s->id},
                          {"at", {{"unix", s->at.time_since_epoch().count()}, {"local", p.scheduler_zone.format(s->at)}}},
                          {"to", s->to},
                          {"peer_informed", told},
                          {"message", fmt::format("swap {} of module \"{}\" to {} scheduled at {}{}", s->id,
                                                  p.setup.module.name, s->to, p.scheduler_zone.format(s->at),
                                                  told ? "" : fmt::format(" (here only for now: {} learns it when the "
                                                                          "control channel is back)", p.peer_name))}};
}

Result<nlohmann::json> ModuleHost::cancel_scheduled(const std::string& id, const std::string& by) {
    Ports& p = *ports_;
    auto s = p.scheduler->cancel(id, by, Ports::wall_now());
    if (!s) return std::move(s).error();
    const bool told = channel_up();
    return nlohmann::json{{"module", p.setup.module.name},
                          {"node", p.self},
                          {"id", s->id},
                          {"peer_informed", told},
                          {"message", fmt::format("swap {} of module \"{}\" (to {} at {}) cancelled{}", s->id,
                                                  p.setup.module.name, s->to, p.scheduler_zone.format(s->at),
                                                  told ? "" : fmt::format("; {} is not reachable now and learns it "
                                                                          "when the control channel is back: if it "
                                                                          "runs the VM at that time, it still swaps",
                                                                          p.peer_name))}};
}

nlohmann::json ModuleHost::schedule() const {
    const Ports& p = *ports_;
    nlohmann::json j = p.scheduler ? p.scheduler->plan_json(Ports::wall_now()) : nlohmann::json::object();
    j["mode"] = std::string(config::to_string(p.setup.module.failback.mode));
    j["preferred_node"] = p.setup.module.failback.preferred_node;
    j["state"] = std::string(module::to_string(p.runner->state()));
    return j;
}

void ModuleHost::serve_forwarded(AdminCall call) { ports_->serve_forwarded = std::move(call); }

void ModuleHost::forward(nlohmann::json request, std::chrono::milliseconds timeout,
                         std::function<void(Result<nlohmann::json>)> done) {
    Ports& p = *ports_;
    if (!p.peer || !p.peer->status().channel_up) {
        const std::string why = p.peer ? p.peer->status().channel_reason : "no peer channel";
        return done(Error(errc::connection_lost,
                          fmt::format("module \"{}\": {} cannot be asked: the control channel is down ({})",
                                      p.setup.module.name, p.peer_name, why)));
    }
    const std::uint64_t id = ++p.next_forward_id;
    auto timer = std::make_shared<boost::asio::steady_timer>(p.io, timeout);
    std::weak_ptr<bool> l = p.live;
    timer->async_wait([&p, l, id, timeout](const boost::system::error_code& ec) {
        if (ec || l.expired()) return;
        auto it = p.forwarded.find(id);
        if (it == p.forwarded.end()) return;
        auto f = std::move(it->second);
        p.forwarded.erase(it);
        f.done(Error(errc::timeout, fmt::format("module \"{}\": {} did not answer within {} s",
                                                p.setup.module.name, p.peer_name, timeout.count() / 1000)));
    });
    p.forwarded[id] = {std::move(done), timer};
    if (!p.peer->send({{"type", "admin"}, {"id", id}, {"request", std::move(request)}})) {
        p.fail_forwarded(fmt::format("module \"{}\": the control channel to {} is down", p.setup.module.name,
                                     p.peer_name));
    }
}

bool ModuleHost::channel_up() const { return ports_->peer && ports_->peer->status().channel_up; }

bool ModuleHost::peer_runs_vm() const { return ports_->peer_runs_vm(); }

const std::string& ModuleHost::peer_name() const { return ports_->peer_name; }

}  // namespace vmha::daemon
