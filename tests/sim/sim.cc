#include "sim.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <queue>
#include <random>
#include <set>

#include <fmt/format.h>

#include <vmha/lease/lease.h>
#include <vmha/module/runner.h>

namespace vmha::sim {
namespace {

using module::DataState;
using module::Link;
using module::Liveness;
using module::State;
using Ms = std::int64_t;
namespace meta = imagesync::meta;

constexpr Ms kHeartbeatInterval = 500;
constexpr Ms kHeartbeatTimeout = 3000;
constexpr Ms kReplicationTimeout = 5000;
constexpr int kPaths = 2;

// ---------------------------------------------------------------------------- the event queue

class World;

struct Event {
    Ms at;
    std::uint64_t seq;
    std::function<void()> fn;
    bool operator>(const Event& o) const { return at != o.at ? at > o.at : seq > o.seq; }
};

// A node's clock: true (virtual) time scaled by the node's rate (1.0 without a witness).
class VirtualClock final : public module::Clock {
public:
    VirtualClock(World& w, double rate) : world_(w), rate_(rate) {}
    module::TimePoint now() const override;
    std::unique_ptr<Token> after(module::Duration delay, std::function<void()> fn) override;

private:
    World& world_;
    double rate_;
};

constexpr Ms kLeaseTtl = 8000;
constexpr Ms kLeaseMargin = 1000;
constexpr Ms kWitnessRequestTimeout = 2000;

// ---------------------------------------------------------------------------- a node

struct Node;

struct Incarnation;  // one run of vmhad on a node: its runner and ports

struct Node {
    int id = 0;
    std::string name;
    bool machine_up = true;
    bool vmhad_up = false;
    // imagesyncd
    bool is_up = false;
    bool is_primary = false;
    meta::NodeMeta meta;
    bool alone_generation_minted = false;
    std::vector<std::uint64_t> writes;  // the copy: every write it holds, in order
    Link link = Link::down;
    // fencing (imagesyncd --fence, as vmhad runs it): after losing the peer, a primary applies
    // writes but holds their replies until vmhad's resume-io, a reconnect, or (failed) demotion
    bool fencing = false;
    std::vector<std::uint64_t> fenced;
    std::uint64_t instance = 0;  // bumped at every imagesyncd start (its "pid")
    // imagesyncd's write deadline on this node's clock (ms; with a witness): it accepts writes
    // only before it. -1: none (no witness).
    double write_until = -1;
    double rate = 1.0;  // this node's clock rate
    // the VM
    bool vm_running = false;
    bool vm_paused_io = false;
    // vmhad's persisted module state (survives every crash)
    module::Persisted store;
    // vmhad's view of the peer
    std::array<Ms, kPaths> last_heard{-1, -1};
    Liveness liveness = Liveness::unknown;
    bool channel_up = false;
    std::shared_ptr<Incarnation> vmhad;
};

// ---------------------------------------------------------------------------- the world

class World {
public:
    explicit World(const Options& o) : options_(o), rng_(o.seed) {
        nodes_[0].id = 0;
        nodes_[0].name = "hv1";
        nodes_[1].id = 1;
        nodes_[1].name = "hv2";
        // Both copies start identical and in sync (as after the initial full sync).
        meta::NodeMeta m;
        m.gen.current = 0x1000;
        m.data_state = meta::DataState::UpToDate;
        // One seed in four starts a new pair: neither copy holds data yet.
        if (o.seed % 4 == 0) m = meta::NodeMeta::just_created();
        for (auto& n : nodes_) {
            n.meta = m;
            n.store.started = true;
        }
        if (o.witness) {
            // Clocks within +-0.5 % of true time: any two differ by less than 1 %.
            for (auto& n : nodes_) n.rate = 1.0 + static_cast<double>(uniform(-5000, 5000)) / 1e6;
            witness_rate_ = 1.0 + static_cast<double>(uniform(-5000, 5000)) / 1e6;
        }
    }

    Outcome run();

    // -- used by the ports and the clock
    Ms now() const { return now_; }
    void at(Ms delay, std::function<void()> fn) {
        queue_.push(Event{now_ + std::max<Ms>(0, delay), seq_++, std::move(fn)});
    }
    Ms uniform(Ms lo, Ms hi) { return std::uniform_int_distribution<Ms>(lo, hi)(rng_); }
    bool chance(double p) { return std::bernoulli_distribution(p)(rng_); }
    void log(std::string line) {
        std::string l = fmt::format("{:>9.3f} {}", static_cast<double>(now_) / 1000.0, line);
        if (options_.trace) {
            out_.trace.push_back(std::move(l));
        } else {
            recent_.push_back(std::move(l));
            if (recent_.size() > 200) recent_.pop_front();
        }
    }
    void violation(std::string what) {
        log("VIOLATION: " + what);
        if (out_.violations.size() < 20) out_.violations.push_back(fmt::format("t={}ms: {}", now_, what));
    }
    Node& node(int i) { return nodes_[static_cast<std::size_t>(i)]; }
    bool witness() const { return options_.witness; }
    bool lease_rules() const { return options_.lease_rules; }
    double local_ms(const Node& n) const { return static_cast<double>(now_) * n.rate; }
    // imagesyncd takes a write now: up, primary, and (with a witness) within its deadline.
    bool accepts(const Node& n) const {
        return n.is_up && n.is_primary && (n.write_until < 0 || local_ms(n) < n.write_until);
    }
    // the witness
    void witness_call(Node& n, std::weak_ptr<bool> live,
                      std::function<lease::LeaseState(const std::string&, double)> at_witness,
                      std::function<void(Result<lease::LeaseState>)> done);
    lease::LeaseState witness_acquire(const std::string& who, double tw, Ms ttl);
    lease::LeaseState witness_release(const std::string& who);
    void count_note(const std::string& what) {
        if (what.rfind("self-fence: ", 0) == 0 && what.find("failed") == std::string::npos) ++out_.self_fences;
        if (what.rfind("contending for the lease", 0) == 0) ++out_.lease_refusals;
    }
    Node& peer_of(const Node& n) { return nodes_[static_cast<std::size_t>(1 - n.id)]; }

    // network
    bool path_ok(int path) const { return !full_partition_ && !path_cut_[static_cast<std::size_t>(path)]; }
    bool channel_ok() const { return !full_partition_ && !control_cut_; }
    bool replication_ok() const { return !full_partition_ && !replication_cut_; }

    // imagesync model
    void update_link();
    void connect_command();
    void release_fence(Node& n, const char* why);
    void break_link(Ms detect_after);
    module::ImagesyncStatus imagesync_status(const Node& n) const;
    Status promote(Node& n);
    Status demote(Node& n);
    Status outdate(Node& n);
    std::uint64_t fresh_generation() { return next_generation_++; }
    bool automatic_failback() const { return options_.seed % 3 == 1; }
    void imagesync_start(Node& n);
    void imagesync_crash(Node& n);
    // vm model
    Status vm_start(Node& n);
    void vm_stop(Node& n);
    // vmhad
    void vmhad_start(Node& n);
    void vmhad_stop(Node& n);
    void machine_crash(Node& n);
    void machine_boot(Node& n);
    void update_channel();
    void deliver(Node& from, const nlohmann::json& message);

    int transitions = 0;
    Ms last_transition = 0;

private:
    void heartbeat_tick(Node& n);
    void liveness_tick(Node& n);
    void write_tick();
    void fault_tick();
    void check_two_runners();
    void check_writers();
    void witness_restart();
    void partition_scenario();
    void handshake();
    void finish_resync(int source, std::uint64_t link_epoch);
    bool network_whole() const {
        return !full_partition_ && !control_cut_ && !replication_cut_ && !path_cut_[0] && !path_cut_[1];
    }

    Options options_;
    std::mt19937_64 rng_;
    Ms now_ = 0;
    std::uint64_t seq_ = 0;
    std::priority_queue<Event, std::vector<Event>, std::greater<>> queue_;
    std::array<Node, 2> nodes_;
    Outcome out_;
    std::deque<std::string> recent_;

    bool full_partition_ = false;
    bool control_cut_ = false;
    bool replication_cut_ = false;
    std::array<bool, kPaths> path_cut_{false, false};
    double loss_ = 0.0;
    std::array<double, 2> loss_from_{0.0, 0.0};  // heartbeats from node i (asymmetric loss)
    // the witness
    double witness_rate_ = 1.0;
    bool witness_up_ = true;
    std::array<bool, 2> to_witness_cut_{false, false};    // node i -> witness
    std::array<bool, 2> from_witness_cut_{false, false};  // witness -> node i
    double witness_loss_ = 0.0;
    struct Grant {
        std::string holder;
        double expiry = 0;  // witness clock, ms
        Ms ttl = 0;
        std::uint64_t epoch = 0;
    } grant_;
    bool two_writers_seen_ = false;
    bool faults_on_ = true;
    Ms whole_since_ = 0;       // the network has been whole since then
    bool split_happened_ = false;  // both ran the VM in a full partition since the last heal
    Ms full_heal_at_ = -100000;
    Ms both_vmhad_since_ = 0;  // both vmhad have been running since then
    // Both nodes ran the VM during a partition, and the two vmhad have not met since: every
    // write now may be on one line of history only.
    bool split_unresolved_ = false;  // a primary imagesyncd went on alone while its vmhad was down
    bool split_brain_seen_ = false;  // a handshake found split brain: an operator must resolve it    // when the last full partition healed
    // A write acknowledged now may be missing from the peer's copy by a split brain, which only
    // a witness prevents: during a full partition, in the decisions' aftermath just after it,
    // or while both nodes are primary.
    bool in_split() const {
        return full_partition_ || split_unresolved_ || now_ - full_heal_at_ < 10000 ||
               (nodes_[0].is_up && nodes_[0].is_primary && nodes_[1].is_up && nodes_[1].is_primary) ||
               (nodes_[0].vm_running && nodes_[1].vm_running);
    }

    // replication link: established both ways at once; bumps on every change
    std::uint64_t link_epoch_ = 0;
    bool link_pending_ = false;
    bool link_breaking_ = false;
    std::uint64_t channel_epoch_ = 0;
    bool channel_state_ = false;
    std::array<Ms, 2> channel_last_delivery_{0, 0};

    std::uint64_t next_write_ = 1;
    std::uint64_t next_generation_ = 0x2000;
    struct Acked {
        std::uint64_t id;
        bool split;
    };
    std::vector<Acked> acked_;
    std::vector<std::uint64_t> held_;  // writes waiting for the replication link's verdict
    int held_node_ = -1;

    friend struct Incarnation;
};

module::TimePoint VirtualClock::now() const {
    if (rate_ == 1.0) return module::TimePoint{} + std::chrono::milliseconds(world_.now()) + std::chrono::hours(1);
    const auto ns = static_cast<std::int64_t>(static_cast<double>(world_.now()) * rate_ * 1e6);
    return module::TimePoint{} + std::chrono::nanoseconds(ns) + std::chrono::hours(1);
}

std::unique_ptr<module::Clock::Token> VirtualClock::after(module::Duration delay,
                                                          std::function<void()> fn) {
    struct T final : Token {
        std::shared_ptr<bool> live = std::make_shared<bool>(true);
        ~T() override { *live = false; }
    };
    auto token = std::make_unique<T>();
    std::weak_ptr<bool> live = token->live;
    // A delay on this clock lasts delay / rate of true time (rounded up).
    const Ms d = rate_ == 1.0 ? delay.count()
                              : static_cast<Ms>(std::ceil(static_cast<double>(delay.count()) / rate_));
    world_.at(d, [live, fn = std::move(fn)] {
        if (auto l = live.lock(); l && *l) fn();
    });
    return token;
}

// ---------------------------------------------------------------------------- ports

// One run of vmhad on a node: the runner and its ports. Completions are delivered later on the
// virtual clock, and dropped if this incarnation has ended (vmhad crashed) by then.
struct Incarnation {
    World& w;
    Node& n;
    VirtualClock clock;
    std::shared_ptr<bool> live = std::make_shared<bool>(true);

    template <typename F>
    void later(Ms lo, Ms hi, F fn) {
        std::weak_ptr<bool> l = live;
        w.at(w.uniform(lo, hi), [l, fn = std::move(fn)]() mutable {
            if (auto p = l.lock(); p && *p) fn();
        });
    }

    struct Imagesync final : module::ImagesyncPort {
        Incarnation& i;
        explicit Imagesync(Incarnation& inc) : i(inc) {}
        void ensure_running(module::Done done) override {
            i.later(20, 300, [this, done] {
                if (!i.n.is_up) i.w.imagesync_start(i.n);
                done({});
            });
        }
        void stop(module::Done done) override {
            i.later(20, 300, [this, done] {
                if (i.n.is_up) {
                    if (i.n.is_primary) (void)i.w.demote(i.n);
                    i.n.is_up = false;
                    i.w.log(fmt::format("{}: imagesyncd stopped", i.n.name));
                    i.w.update_link();
                }
                done({});
            });
        }
        void status(std::function<void(module::ImagesyncStatus)> done) override {
            i.later(1, 50, [this, done] { done(i.w.imagesync_status(i.n)); });
        }
        void promote(module::Done done) override {
            i.later(5, 100, [this, done] { done(i.w.promote(i.n)); });
        }
        void demote(module::Done done) override {
            i.later(5, 100, [this, done] { done(i.w.demote(i.n)); });
        }
        void connect(module::Done done) override {
            i.later(1, 20, [this, done] {
                i.w.connect_command();
                done({});
            });
        }
        void outdate(module::Done done) override {
            i.later(5, 50, [this, done] { done(i.w.outdate(i.n)); });
        }
        void resume_io(module::Done done) override {
            i.later(5, 50, [this, done] {
                if (!i.n.is_up || !i.n.fencing) return done(Error(errc::invalid_argument, "not fencing"));
                i.w.release_fence(i.n, "resume-io");
                done({});
            });
        }
        void write_lease(module::Duration valid_for, module::Done done) override {
            if (!i.w.witness() || !i.w.lease_rules()) return module::ImagesyncPort::write_lease(valid_for, std::move(done));
            // Takes effect when imagesyncd reads it (the control call's delay), latest wins.
            i.later(1, 20, [this, valid_for, done] {
                if (!i.n.is_up) return done(Error(errc::connection_lost, "imagesyncd is not running"));
                i.n.write_until = i.w.local_ms(i.n) + static_cast<double>(valid_for.count());
                done({});
            });
        }
        void declare_initial_data(module::Done done) override {
            i.later(5, 50, [this, done] {
                if (!i.n.is_up) return done(Error(errc::connection_lost, "imagesyncd is not running"));
                i.n.meta = meta::NodeMeta::initial_source(i.w.fresh_generation());
                i.w.log(fmt::format("{}: images declared the initial data", i.n.name));
                i.w.update_link();
                done({});
            });
        }
    } imagesync{*this};

    struct Vm final : module::VmPort {
        Incarnation& i;
        explicit Vm(Incarnation& inc) : i(inc) {}
        void start(module::Done done) override {
            i.later(200, 3000, [this, done] { done(i.w.vm_start(i.n)); });
        }
        void stop(module::Done done) override {
            i.later(100, 2000, [this, done] {
                i.w.vm_stop(i.n);
                done({});
            });
        }
        void power_off(module::Done done) override {
            i.later(20, 500, [this, done] {
                i.w.vm_stop(i.n);
                done({});
            });
        }
        void resume(module::Done done) override {
            i.later(50, 300, [this, done] {
                if (i.n.vm_running && i.n.vm_paused_io && i.n.is_up && (!i.w.witness() || i.w.accepts(i.n))) {
                    i.n.vm_paused_io = false;
                    i.w.log(fmt::format("{}: VM resumed", i.n.name));
                    done({});
                    return;
                }
                done(Error(errc::busy, "the VM is not paused on an I/O error, or its disks are away"));
            });
        }
        void health(std::function<void(module::VmHealth, std::string)> done) override {
            i.later(5, 200, [this, done] {
                if (!i.n.vm_running) return done(module::VmHealth::stopped, "domain web1 is shut off");
                if (i.n.vm_paused_io) return done(module::VmHealth::paused_on_io_error, "paused: ioerror");
                done(module::VmHealth::running, "running");
            });
        }
    } vm{*this};

    struct Peer final : module::PeerPort {
        Incarnation& i;
        explicit Peer(Incarnation& inc) : i(inc) {}
        void send(const nlohmann::json& message) override { i.w.deliver(i.n, message); }
    } peer{*this};

    struct Store final : module::Store {
        Incarnation& i;
        explicit Store(Incarnation& inc) : i(inc) {}
        module::Persisted load() override { return i.n.store; }
        Status save(const module::Persisted& p) override {
            i.n.store = p;
            return {};
        }
    } store{*this};

    struct Observer final : module::Observer {
        Incarnation& i;
        explicit Observer(Incarnation& inc) : i(inc) {}
        void transition(State from, State to, int rule, const std::string& reason) override {
            ++i.w.transitions;
            i.w.last_transition = i.w.now();
            i.w.log(fmt::format("{}: {} -> {} (rule {}): {}", i.n.name, module::to_string(from),
                                module::to_string(to), rule, reason));
        }
        void note(const std::string& what) override {
            i.w.count_note(what);
            i.w.log(fmt::format("{}: {}", i.n.name, what));
        }
    } observer{*this};

    struct Lease final : module::LeasePort {
        Incarnation& i;
        explicit Lease(Incarnation& inc) : i(inc) {}
        void acquire(module::Duration ttl, std::function<void(Result<lease::LeaseState>)> done) override {
            const std::string who = i.n.name;
            i.w.witness_call(i.n, i.live,
                             // Runs at the witness, maybe after this vmhad died: the world only.
                             [&w = i.w, who, ttl](const std::string&, double tw) {
                                 return w.witness_acquire(who, tw, ttl.count());
                             },
                             std::move(done));
        }
        void release(module::Done done) override {
            const std::string who = i.n.name;
            i.w.witness_call(i.n, i.live,
                             [&w = i.w, who](const std::string&, double) { return w.witness_release(who); },
                             [done](Result<lease::LeaseState> r) {
                                 if (!r) return done(Status(std::move(r).error()));
                                 done({});
                             });
        }
    } lease{*this};

    std::unique_ptr<module::ModuleRunner> runner;

    Incarnation(World& world, Node& node) : w(world), n(node), clock(world, node.rate) {
        module::RunnerConfig c;
        c.module = "web1";
        c.self = n.name;
        c.peer = w.peer_of(n).name;
        c.preferred = n.id == 0;  // the first node listed
        c.poll = module::Duration(1000);
        c.startup_grace = module::Duration(2 * kHeartbeatTimeout + 2000);
        c.handover_timeout = module::Duration(30000);
        c.imagesync_settle = module::Duration(3000);
        // One seed in three fails back automatically to hv1 (the preferred node).
        c.automatic_failback = w.automatic_failback() && n.id != 0;
        c.failback_stable = module::Duration(20000);
        c.heartbeat_timeout = module::Duration(kHeartbeatTimeout);
        c.replication_timeout = module::Duration(kReplicationTimeout);
        c.heartbeat_interval = module::Duration(kHeartbeatInterval);
        c.restart_attempts = 3;
        c.restart_window = module::Duration(600000);
        if (w.witness() && w.lease_rules()) {
            module::RunnerConfig::Lease l;
            l.ttl = module::Duration(kLeaseTtl);
            l.timing.margin = module::Duration(kLeaseMargin);
            l.timing.drift = 0.01;
            c.lease = l;
        }
        runner = std::make_unique<module::ModuleRunner>(c, clock, imagesync, vm, peer, store, observer, &lease);
    }
    ~Incarnation() {
        *live = false;
        runner.reset();
    }
};

// ---------------------------------------------------------------------------- imagesync model

module::ImagesyncStatus World::imagesync_status(const Node& n) const {
    module::ImagesyncStatus s;
    if (!n.is_up) return s;
    s.up = true;
    s.primary = n.is_primary;
    switch (n.meta.data_state) {
        case meta::DataState::UpToDate: s.data = DataState::up_to_date; break;
        case meta::DataState::Inconsistent: s.data = DataState::inconsistent; break;
        case meta::DataState::Outdated: s.data = DataState::outdated; break;
        case meta::DataState::Unknown: s.data = DataState::unknown; break;
    }
    s.link = n.link;
    s.generations = n.meta.gen;
    s.crashed_primary = n.meta.crashed_primary;
    s.fencing = n.fencing;
    s.instance = n.instance;
    return s;
}

void World::imagesync_start(Node& n) {
    n.is_up = true;
    ++n.instance;
    n.is_primary = false;
    n.link = Link::down;
    n.alone_generation_minted = false;
    n.fencing = false;
    n.fenced.clear();  // never acknowledged: lost with the process
    n.write_until = witness() && lease_rules() ? 0 : -1;  // with a witness: no writes until vmhad says so
    n.meta.note_start();
    log(fmt::format("{}: imagesyncd started (secondary{})", n.name,
                    n.meta.crashed_primary ? ", crashed while primary" : ""));
    update_link();
}

void World::imagesync_crash(Node& n) {
    if (!n.is_up) return;
    n.is_up = false;
    n.link = Link::down;
    if (n.vm_running) n.vm_paused_io = true;
    log(fmt::format("{}: imagesyncd crashed", n.name));
    update_link();
}

Status World::promote(Node& n) {
    if (!n.is_up) return Error(errc::connection_lost, "imagesyncd is not running");
    const Node& p = peer_of(n);
    if (n.link != Link::down && n.link != Link::split_brain && n.link != Link::refused && p.is_up &&
        p.is_primary) {
        return Error(errc::busy, "promotion refused while a primary is connected");
    }
    if (n.meta.data_state != meta::DataState::UpToDate) {
        return Error(errc::not_up_to_date, "the data is not UpToDate");
    }
    if (!n.is_primary) {
        n.is_primary = true;
        n.meta.promote();
        log(fmt::format("{}: imagesync promoted", n.name));
        update_link();
    }
    return {};
}

Status World::demote(Node& n) {
    if (!n.is_up) return Error(errc::connection_lost, "imagesyncd is not running");
    if (n.is_primary) {
        if (n.fencing) {
            log(fmt::format("{}: demoted while fencing: {} held writes fail", n.name, n.fenced.size()));
            n.fencing = false;
            n.fenced.clear();
        }
        n.is_primary = false;
        n.meta.demote_cleanly();
        log(fmt::format("{}: imagesync demoted", n.name));
        // Writes the VM had in flight are settled before the demotion completes.
        update_link();
    }
    return {};
}

Status World::outdate(Node& n) {
    if (!n.is_up) return Error(errc::connection_lost, "imagesyncd is not running");
    if (n.is_primary || n.link == Link::connected || n.link == Link::sync_source || n.link == Link::sync_target) {
        return Error(errc::busy, "only a secondary that is not connected can be marked Outdated");
    }
    if (n.meta.data_state == meta::DataState::UpToDate) n.meta.mark_outdated();
    log(fmt::format("{}: data marked Outdated", n.name));
    return {};
}

// The replication link follows the conditions: it breaks when a side or the network goes,
// and a handshake (imagesync's real decide()) runs when both sides can talk again.
void World::update_link() {
    Node& a = nodes_[0];
    Node& b = nodes_[1];
    const bool possible = a.is_up && b.is_up && replication_ok();
    const bool linked = a.link != Link::down || b.link != Link::down;
    if (linked && !possible) {
        // A side that is gone is noticed at once (the connection resets); a silent network only
        // after the replication timeout, during which the primary holds its writes.
        const bool side_gone = !a.is_up || !b.is_up;
        break_link(side_gone ? 0 : kReplicationTimeout);
        return;
    }
    if (linked && possible) {
        return;  // as imagesync: a refused link stays refused until a `connect`
    }
    if (!linked && possible && !link_pending_) {
        link_pending_ = true;
        at(uniform(100, 1500), [this] {
            link_pending_ = false;
            handshake();
        });
    }
}

void World::release_fence(Node& n, const char* why) {
    if (!n.fencing) return;
    log(fmt::format("{}: fencing ends ({}): {} held writes acknowledged", n.name, why, n.fenced.size()));
    for (std::uint64_t id : n.fenced) {
        acked_.push_back({id, in_split()});
        ++out_.acked_writes;
    }
    n.fenced.clear();
    n.fencing = false;
}

// `imagesync connect`: a refused link handshakes again (and may be refused again).
void World::connect_command() {
    Node& a = nodes_[0];
    if ((a.link == Link::refused || a.link == Link::split_brain) && !link_pending_) {
        link_pending_ = true;
        at(uniform(100, 1000), [this] {
            link_pending_ = false;
            handshake();
        });
        return;
    }
    update_link();
}

void World::break_link(Ms detect_after) {
    if (link_breaking_) return;
    link_breaking_ = true;
    const std::uint64_t epoch = ++link_epoch_;
    at(detect_after, [this, epoch] {
        link_breaking_ = false;
        if (epoch != link_epoch_) return;
        ++link_epoch_;
        for (auto& n : nodes_) {
            if (n.link != Link::down) log(fmt::format("{}: replication link lost", n.name));
            if (n.link != Link::down && n.is_up && n.is_primary && !n.fencing) {
                n.fencing = true;
                log(fmt::format("{}: fencing: write replies wait", n.name));
            }
            if (n.link == Link::sync_target) {
                // An interrupted resync target stays Inconsistent until it resumes.
            }
            n.link = Link::down;
            n.alone_generation_minted = false;
        }
        // Writes held during the timeout go on alone now (recorded dirty, then acknowledged).
        if (held_node_ >= 0) {
            Node& h = nodes_[static_cast<std::size_t>(held_node_)];
            for (std::uint64_t id : held_) {
                if (accepts(h)) {
                    if (!h.alone_generation_minted) {
                        h.meta.new_generation_when_alone(next_generation_++);
                        h.alone_generation_minted = true;
                    }
                    h.writes.push_back(id);
                    if (h.fencing) {
                        h.fenced.push_back(id);
                    } else {
                        acked_.push_back({id, in_split()});
                        ++out_.acked_writes;
                    }
                }
            }
            held_.clear();
            held_node_ = -1;
        }
        update_link();
    });
}

void World::handshake() {
    Node& a = nodes_[0];
    Node& b = nodes_[1];
    if (!(a.is_up && b.is_up && replication_ok())) return;
    meta::Roles roles;
    roles.self_primary = a.is_primary;
    roles.peer_primary = b.is_primary;
    roles.self_wins_ties = true;
    const meta::SyncDecision d = meta::decide(a.meta, b.meta, roles);
    ++link_epoch_;
    auto refuse = [&](Link l) {
        if (a.link != l) log(fmt::format("replication handshake refused: {} (rule {})", meta::to_string(d.kind), d.rule));
        a.link = l;
        b.link = l;
    };
    auto as_target = [&](Node& t, bool full) {
        if (full) t.meta.start_full_sync_target();
        else t.meta.start_bitmap_sync_target();
    };
    Node* source = nullptr;
    Node* target = nullptr;
    bool full = false;
    switch (d.kind) {
        case meta::SyncKind::in_sync:
            a.link = b.link = Link::connected;
            for (auto& n : nodes_) {
                if (!n.is_primary) n.meta.data_state = meta::DataState::UpToDate;
                release_fence(n, "the peer reconnected in sync");
            }
            log("replication link up: in sync");
            return;
        case meta::SyncKind::self_is_source_bitmap: source = &a; target = &b; break;
        case meta::SyncKind::self_is_source_full: source = &a; target = &b; full = true; break;
        case meta::SyncKind::self_is_target_bitmap: source = &b; target = &a; break;
        case meta::SyncKind::self_is_target_full: source = &b; target = &a; full = true; break;
        case meta::SyncKind::split_brain:
            split_brain_seen_ = true;
            refuse(Link::split_brain);
            return;
        case meta::SyncKind::unrelated:
        case meta::SyncKind::no_usable_source: refuse(Link::refused); return;
    }
    // As imagesync's replicator: the target side starts as a target (Inconsistent) when it is a
    // secondary and the source is primary (only a primary dials: two secondaries never reach
    // this point there, so neither changes); a primary is never a target.
    if (!target->is_primary && source->is_primary) as_target(*target, full);
    if (!source->is_primary || target->is_primary) {
        refuse(Link::refused);
        return;
    }
    if (source->meta.gen.bitmap == meta::kNoGeneration && !meta::is_reserved_generation(target->meta.gen.current)) {
        source->meta.gen.bitmap = target->meta.gen.current;
    }
    source->link = Link::sync_source;
    target->link = Link::sync_target;
    release_fence(*source, "the peer reconnected as the resync target");
    log(fmt::format("replication link up: resync {} -> {} ({})", source->name, target->name, meta::to_string(d.kind)));
    const std::uint64_t epoch = link_epoch_;
    const int src = source->id;
    at(uniform(500, 4000), [this, src, epoch] { finish_resync(src, epoch); });
}

void World::finish_resync(int src, std::uint64_t epoch) {
    if (epoch != link_epoch_) return;  // the link broke meanwhile: resumes at the next handshake
    Node& s = nodes_[static_cast<std::size_t>(src)];
    Node& t = peer_of(s);
    t.writes = s.writes;
    s.meta.gen.clear_bitmap_after_sync();
    s.meta.finish_sync_source();
    t.meta.finish_sync_target(s.meta.gen);
    s.link = t.link = Link::connected;
    log(fmt::format("resync {} -> {} finished", s.name, t.name));
}

// ---------------------------------------------------------------------------- VM model

Status World::vm_start(Node& n) {
    if (!n.is_up || !n.is_primary) {
        return Error(errc::hypervisor_error, "the VM's disks are not served here as primary");
    }
    if (n.vm_running) return {};
    // The invariant: the copy holds every write ever acknowledged to the guest (split-brain
    // writes aside).
    std::set<std::uint64_t> have(n.writes.begin(), n.writes.end());
    for (const Acked& a : acked_) {
        if (!a.split && !have.count(a.id)) {
            violation(fmt::format("VM started on {} whose copy lacks acknowledged write {}", n.name, a.id));
            break;
        }
    }
    for (const Acked& a : acked_) {
        if (a.split && !have.count(a.id)) {
            ++out_.stale_starts;  // writes acknowledged in a partition are lost with this start
            break;
        }
    }
    n.vm_running = true;
    n.vm_paused_io = false;
    ++out_.vm_starts;
    log(fmt::format("{}: VM started", n.name));
    check_two_runners();
    return {};
}

void World::vm_stop(Node& n) {
    if (n.vm_running) log(fmt::format("{}: VM stopped", n.name));
    n.vm_running = false;
    n.vm_paused_io = false;
}

void World::check_two_runners() {
    // A VM paused on an I/O error with no primary imagesync under it cannot write: not running.
    auto writes = [this](const Node& n) { return n.vm_running && !(n.vm_paused_io && !accepts(n)); };
    if (!(writes(nodes_[0]) && writes(nodes_[1]))) return;
    // Reaching each other takes the network and both vmhad: a split brain is resolved by the
    // two vmhad once they hear each other again.
    if (!network_whole() || now_ - std::max(whole_since_, both_vmhad_since_) < 2 * kHeartbeatTimeout) {
        if (!split_unresolved_) log("both nodes run the VM while the network is split (split brain)");
        split_happened_ = true;
        split_unresolved_ = true;
        return;
    }
    violation("both nodes run the VM while the network between them is whole");
}

void World::write_tick() {
    at(200, [this] { write_tick(); });
    for (auto& n : nodes_) {
        if (!n.vm_running || n.vm_paused_io) continue;
        if (!n.is_up || !n.is_primary) {
            continue;  // the guest's writes fail (read-only export); nothing is acknowledged
        }
        if (!accepts(n)) {
            // Past the write deadline: the write fails, the VM pauses on the I/O error.
            log(fmt::format("{}: write refused: past imagesync's write deadline; the VM pauses", n.name));
            n.vm_paused_io = true;
            continue;
        }
        const std::uint64_t id = next_write_++;
        Node& p = peer_of(n);
        const bool split = in_split();
        if (split) ++out_.split_brains;
        if (n.link == Link::connected || n.link == Link::sync_source) {
            if (p.is_up && replication_ok()) {
                n.writes.push_back(id);
                if (n.link == Link::connected) p.writes.push_back(id);
                acked_.push_back({id, split});
                ++out_.acked_writes;
            } else {
                held_.push_back(id);  // waits for the link's verdict (break_link)
                held_node_ = n.id;
            }
            continue;
        }
        if (n.link == Link::sync_target) continue;  // never: a primary is not a target
        if (!n.alone_generation_minted) {
            n.meta.new_generation_when_alone(next_generation_++);
            n.alone_generation_minted = true;
        }
        n.writes.push_back(id);
        if (n.fencing) {
            n.fenced.push_back(id);
            continue;
        }
        acked_.push_back({id, split});
        ++out_.acked_writes;
    }
}

// ---------------------------------------------------------------------------- vmhad and network

void World::vmhad_start(Node& n) {
    if (!n.machine_up || n.vmhad_up) return;
    n.vmhad_up = true;
    n.last_heard = {-1, -1};
    n.liveness = Liveness::unknown;
    n.channel_up = false;
    log(fmt::format("{}: vmhad started", n.name));
    // imagesyncd: the supervisor re-attaches to a running one or spawns it.
    if (!n.is_up && n.store.started) imagesync_start(n);
    n.vmhad = std::make_shared<Incarnation>(*this, n);
    n.vmhad->runner->start();
    update_channel();
}

void World::vmhad_stop(Node& n) {
    if (!n.vmhad_up) return;
    n.vmhad_up = false;
    n.vmhad.reset();
    n.channel_up = false;
    log(fmt::format("{}: vmhad died", n.name));
    update_channel();
}

void World::machine_crash(Node& n) {
    if (!n.machine_up) return;
    log(fmt::format("{}: MACHINE CRASH", n.name));
    vmhad_stop(n);
    n.vm_running = false;
    n.vm_paused_io = false;
    if (n.is_up) {
        n.is_up = false;
        n.link = Link::down;
        update_link();
    }
    n.machine_up = false;
}

void World::machine_boot(Node& n) {
    if (n.machine_up) return;
    n.machine_up = true;
    log(fmt::format("{}: machine booted", n.name));
    vmhad_start(n);
}

void World::update_channel() {
    const bool ok = nodes_[0].vmhad_up && nodes_[1].vmhad_up && channel_ok();
    if (ok == channel_state_) return;
    channel_state_ = ok;
    const std::uint64_t epoch = ++channel_epoch_;
    for (auto& n : nodes_) {
        if (!n.vmhad_up) continue;
        // Up: after the TLS handshake. Down: a dead process resets at once, a silent network
        // is noticed by the channel's own keepalive within the heartbeat timeout.
        const bool peer_process_died = !peer_of(n).vmhad_up;
        const Ms delay = ok ? uniform(50, 500) : (peer_process_died ? uniform(1, 50) : uniform(500, kHeartbeatTimeout));
        std::weak_ptr<Incarnation> inc = n.vmhad;
        at(delay, [this, inc, epoch, ok, &n] {
            auto i = inc.lock();
            if (!i || epoch != channel_epoch_) return;
            n.channel_up = ok;
            i->runner->on_peer_channel(ok);
        });
    }
}

void World::deliver(Node& from, const nlohmann::json& message) {
    if (!channel_state_ || !from.channel_up) return;
    Node& to = peer_of(from);
    const std::uint64_t epoch = channel_epoch_;
    // In order: TCP.
    Ms& last = channel_last_delivery_[static_cast<std::size_t>(to.id)];
    const Ms when = std::max(now_ + uniform(1, 300), last);
    last = when;
    std::weak_ptr<Incarnation> inc = to.vmhad;
    at(when - now_, [this, inc, epoch, message, &to] {
        auto i = inc.lock();
        if (!i || epoch != channel_epoch_ || !to.channel_up) return;
        i->runner->on_peer_message(message);
    });
}

void World::heartbeat_tick(Node& n) {
    at(kHeartbeatInterval, [this, &n] { heartbeat_tick(n); });
    if (!n.vmhad_up) return;
    Node& p = peer_of(n);
    for (int path = 0; path < kPaths; ++path) {
        if (!path_ok(path) || chance(loss_ + loss_from_[static_cast<std::size_t>(n.id)])) continue;
        at(uniform(1, 200), [this, &p, path] {
            if (p.vmhad_up && path_ok(path)) p.last_heard[static_cast<std::size_t>(path)] = now_;
        });
    }
}

void World::liveness_tick(Node& n) {
    at(kHeartbeatInterval / 2, [this, &n] { liveness_tick(n); });
    if (!n.vmhad_up) return;
    bool heard_recently = false;
    bool ever = false;
    for (Ms t : n.last_heard) {
        if (t < 0) continue;
        ever = true;
        if (now_ - t <= kHeartbeatTimeout) heard_recently = true;
    }
    Liveness l = heard_recently ? Liveness::alive : (ever ? Liveness::lost : Liveness::unknown);
    if (l == n.liveness) return;
    log(fmt::format("{}: peer {}", n.name, module::to_string(l)));
    n.liveness = l;
    n.vmhad->runner->on_peer_liveness(l);
}

void World::fault_tick() {
    if (!faults_on_) return;
    at(uniform(3000, 25000), [this] { fault_tick(); });
    Node& n = nodes_[static_cast<std::size_t>(uniform(0, 1))];
    ++out_.faults;
    auto heal_later = [this](bool& flag, const char* what) {
        flag = true;
        log(fmt::format("FAULT: {} cut", what));
        at(uniform(3000, 40000), [this, &flag, what] {
            flag = false;
            if (&flag == &full_partition_) full_heal_at_ = now_;
            log(fmt::format("heal: {}", what));
            if (network_whole()) whole_since_ = now_;
            update_channel();
            update_link();
        });
        update_channel();
        update_link();
    };
    auto cut = [&](bool& flag, const char* what) {
        if (flag) return;
        ++out_.partitions;
        heal_later(flag, what);
    };
    const auto side = static_cast<std::size_t>(n.id);
    switch (uniform(0, witness() ? 17 : 11)) {
        case 0:
            machine_crash(n);
            at(uniform(2000, 60000), [this, &n] { machine_boot(n); });
            break;
        case 1:
            if (!n.vmhad_up) break;
            vmhad_stop(n);
            at(uniform(500, 20000), [this, &n] { vmhad_start(n); });
            break;
        case 2:
            if (!n.is_up) break;
            imagesync_crash(n);
            at(uniform(200, 2000), [this, &n] {
                if (n.vmhad_up && !n.is_up && n.store.started) imagesync_start(n);
            });
            break;
        case 3:
            if (n.vm_running) {
                log(fmt::format("FAULT: {}: VM crashed", n.name));
                vm_stop(n);
            }
            break;
        case 4: cut(full_partition_, "full network"); break;
        case 5: cut(replication_cut_, "replication network"); break;
        case 6: cut(control_cut_, "control channel"); break;
        case 7: cut(path_cut_[0], "heartbeat path 0"); break;
        case 8:
            if (n.vmhad && runs_vm(n.vmhad->runner->state())) {
                log(fmt::format("operator: swap on {}", n.name));
                std::weak_ptr<Incarnation> inc = n.vmhad;
                n.vmhad->runner->op_swap([this](Status st) {
                    log(st ? std::string("swap done") : "swap refused: " + st.error().message);
                });
            }
            break;
        case 9:
            if (n.vmhad) {
                log(fmt::format("operator: stop on {}", n.name));
                n.vmhad->runner->op_stop([](Status) {});
                at(uniform(1000, 30000), [this, &n] {
                    if (n.vmhad) {
                        log(fmt::format("operator: start on {}", n.name));
                        (void)n.vmhad->runner->op_start();
                    } else {
                        n.store.started = true;
                    }
                });
            }
            break;
        case 10:
            loss_ = static_cast<double>(uniform(0, 30)) / 100.0;
            log(fmt::format("FAULT: heartbeat loss {:.0f}%", loss_ * 100));
            break;
        // With a witness only:
        case 12: cut(to_witness_cut_[side], side == 0 ? "hv1 -> witness" : "hv2 -> witness"); break;
        case 13: cut(from_witness_cut_[side], side == 0 ? "witness -> hv1" : "witness -> hv2"); break;
        case 14:
            cut(to_witness_cut_[side], side == 0 ? "hv1 -> witness" : "hv2 -> witness");
            cut(from_witness_cut_[side], side == 0 ? "witness -> hv1" : "witness -> hv2");
            break;
        case 15: witness_restart(); break;
        case 16: {
            // Asymmetric heartbeat loss: only what this node sends is lost.
            loss_from_[side] = static_cast<double>(uniform(30, 100)) / 100.0;
            log(fmt::format("FAULT: heartbeats from {} lost at {:.0f}%", n.name, loss_from_[side] * 100));
            at(uniform(3000, 40000), [this, side] {
                loss_from_[side] = 0;
                log(fmt::format("heal: heartbeats from {}", nodes_[side].name));
            });
            break;
        }
        case 17:
            witness_loss_ = static_cast<double>(uniform(0, 50)) / 100.0;
            log(fmt::format("FAULT: witness messages lost at {:.0f}%", witness_loss_ * 100));
            break;
        default:
            break;  // a quiet interval
    }
}

// ---------------------------------------------------------------------------- the witness

// Scenario::partition: one combination of cuts for 40 s (the node-node cut comes at once or up
// to 15 s after the witness cuts), then everything heals.
void World::partition_scenario() {
    const int c = options_.partition;
    log(fmt::format("FAULT: partition {}: {}", c, describe_partition(c)));
    auto witness_link = [this](std::size_t side, int how) {
        to_witness_cut_[side] = (how & 1) != 0;
        from_witness_cut_[side] = (how & 2) != 0;
    };
    witness_link(0, (c >> 2) & 3);
    witness_link(1, c & 3);
    out_.partitions += ((c & 16) ? 1 : 0) + (((c >> 2) & 3) ? 1 : 0) + ((c & 3) ? 1 : 0);
    // The nodes lose each other at once, or after their leases have lapsed (the running node
    // then writes on its peer's agreement alone when the cut comes).
    if (c & 16) {
        at(uniform(0, 1) ? 0 : uniform(1, 15000), [this] {
            log("FAULT: the nodes are cut from each other");
            full_partition_ = true;
            update_channel();
            update_link();
        });
    }
    at(40000, [this] {
        if (full_partition_) full_heal_at_ = now_;
        full_partition_ = false;
        to_witness_cut_ = from_witness_cut_ = {false, false};
        whole_since_ = now_;
        log("heal: every link");
        update_channel();
        update_link();
    });
}

// A request from node `n` to the witness and its reply, each over its own direction of the
// link (cut, lossy, delayed), answered at the witness on its own clock; the caller gets an
// error after the request timeout (on its clock) when no reply came. Completions are dropped
// once `live` (the vmhad that asked) is gone.
void World::witness_call(Node& n, std::weak_ptr<bool> live,
                         std::function<lease::LeaseState(const std::string&, double)> at_witness,
                         std::function<void(Result<lease::LeaseState>)> done) {
    auto answered = std::make_shared<bool>(false);
    auto finish = [live, answered, done](Result<lease::LeaseState> r) {
        if (*answered) return;
        auto l = live.lock();
        if (!l || !*l) return;
        *answered = true;
        done(std::move(r));
    };
    const auto side = static_cast<std::size_t>(n.id);
    const Ms timeout = static_cast<Ms>(std::ceil(static_cast<double>(kWitnessRequestTimeout) / n.rate));
    at(timeout, [finish] { finish(Error(errc::timeout, "the witness did not answer within 2000 ms")); });
    if (to_witness_cut_[side] || chance(witness_loss_)) return;
    at(uniform(1, 150), [this, side, at_witness, finish] {
        if (!witness_up_ || to_witness_cut_[side]) return;
        const lease::LeaseState reply = at_witness(nodes_[side].name, static_cast<double>(now_) * witness_rate_);
        if (from_witness_cut_[side] || chance(witness_loss_)) return;
        at(uniform(1, 150), [this, side, reply, finish] {
            if (from_witness_cut_[side]) return;
            finish(reply);
        });
    });
}

lease::LeaseState World::witness_acquire(const std::string& who, double tw, Ms ttl) {
    Grant& g = grant_;
    const bool free = g.holder.empty() || tw >= g.expiry;
    if (free || g.holder == who) {
        if (free) {
            ++g.epoch;  // granted anew (to another node, or after it expired or was released)
            ++out_.lease_grants;
            log(fmt::format("witness: lease granted to {} (epoch {})", who, g.epoch));
        }
        g.holder = who;
        g.expiry = std::max(g.expiry, tw + static_cast<double>(ttl));
        if (free) g.expiry = tw + static_cast<double>(ttl);
        g.ttl = ttl;
        lease::LeaseState st;
        st.holder = who;
        st.remaining = lease::Duration(static_cast<Ms>(g.expiry - tw));
        st.ttl = lease::Duration(ttl);
        st.epoch = g.epoch;
        return st;
    }
    lease::LeaseState st;
    st.holder = g.holder;
    st.remaining = lease::Duration(static_cast<Ms>(std::ceil(g.expiry - tw)));
    st.ttl = lease::Duration(g.ttl);
    st.epoch = g.epoch;
    return st;
}

lease::LeaseState World::witness_release(const std::string& who) {
    if (grant_.holder == who) {
        log(fmt::format("witness: lease released by {}", who));
        grant_.holder.clear();
        grant_.expiry = 0;
    }
    return {};
}

// The witness goes down for a while and comes back with its grants (its state file): a lease
// held counts as held for its full TTL from the restart.
void World::witness_restart() {
    if (!witness_up_) return;
    witness_up_ = false;
    ++out_.witness_restarts;
    log("FAULT: witness down");
    at(uniform(500, 15000), [this] {
        witness_up_ = true;
        const double tw = static_cast<double>(now_) * witness_rate_;
        if (!grant_.holder.empty()) grant_.expiry = tw + static_cast<double>(grant_.ttl);
        log("witness up again (grants kept)");
    });
}

// The invariant a witness buys: never two nodes accepting writes at one instant.
void World::check_writers() {
    if (!witness()) return;
    if (accepts(nodes_[0]) && accepts(nodes_[1])) {
        if (!two_writers_seen_) violation("both nodes accept writes for the module (split brain)");
        two_writers_seen_ = true;
    } else {
        two_writers_seen_ = false;
    }
}

Outcome World::run() {
    for (auto& n : nodes_) imagesync_start(n);
    for (auto& n : nodes_) vmhad_start(n);
    for (auto& n : nodes_) {
        heartbeat_tick(n);
        liveness_tick(n);
    }
    write_tick();
    if (options_.scenario == Scenario::random_faults) {
        at(uniform(5000, 15000), [this] { fault_tick(); });
    } else if (options_.scenario == Scenario::partition) {
        at(20000, [this] { partition_scenario(); });
    } else {
        at(20000, [this] {
            Node* runner = nodes_[0].vm_running ? &nodes_[0] : nodes_[1].vm_running ? &nodes_[1] : nullptr;
            if (!runner) {
                violation("no node runs the VM 20 s after start");
                return;
            }
            Node& survivor = peer_of(*runner);
            machine_crash(*runner);
            at(20000, [this, &survivor] {
                if (!survivor.vm_running) violation(fmt::format("{} did not take the VM over within 20 s of its peer's crash", survivor.name));
            });
            at(40000, [this, runner] { machine_boot(*runner); });
        });
    }
    const Ms fault_end = Ms{options_.fault_seconds} * 1000;
    const Ms end = fault_end + Ms{options_.settle_seconds} * 1000;
    bool settling = false;
    while (!queue_.empty()) {
        Event e = queue_.top();
        if (e.at > end) break;
        if (!settling && e.at >= fault_end) {
            settling = true;
            now_ = fault_end;
            faults_on_ = false;
            if (full_partition_) full_heal_at_ = fault_end;
            full_partition_ = control_cut_ = replication_cut_ = false;
            path_cut_ = {false, false};
            loss_ = 0;
            loss_from_ = {0, 0};
            to_witness_cut_ = from_witness_cut_ = {false, false};
            witness_loss_ = 0;
            if (!witness_up_) {
                witness_up_ = true;
                if (!grant_.holder.empty()) grant_.expiry = static_cast<double>(now_) * witness_rate_ + static_cast<double>(grant_.ttl);
            }
            whole_since_ = now_;
            log("faults stop: network healed, every node up");
            for (auto& n : nodes_) {
                machine_boot(n);
                vmhad_start(n);
                if (n.vmhad_up && !n.is_up && n.store.started) imagesync_start(n);
                // The operator starts every module again (which also gives the restart
                // attempts back, as `vmha start` does).
                if (n.vmhad) (void)n.vmhad->runner->op_start();
            }
            update_channel();
            update_link();
            continue;
        }
        queue_.pop();
        now_ = e.at;
        e.fn();
        check_writers();
        if (!(nodes_[0].vmhad_up && nodes_[1].vmhad_up)) both_vmhad_since_ = now_;
        // Two primaries (each side took the VM, not knowing of the other: a partition) start
        // two lines of history; the split stays unresolved until the two vmhad meet again.
        if (!split_unresolved_ && nodes_[0].is_up && nodes_[0].is_primary && nodes_[1].is_up &&
            nodes_[1].is_primary && !network_whole()) {
            split_unresolved_ = true;
            log("two primaries while the network is split (split brain)");
        }
        if (split_unresolved_ && network_whole() &&
            now_ - std::max(whole_since_, both_vmhad_since_) >= 2 * kHeartbeatTimeout) {
            split_unresolved_ = false;
            log("the two vmhad met again after the split brain");
        }
        if (nodes_[0].vm_running && nodes_[1].vm_running) check_two_runners();
    }
    now_ = end;

    // Settled?
    out_.transitions = transitions;
    const Node& a = nodes_[0];
    const Node& b = nodes_[1];
    auto state_of = [](const Node& n) { return n.vmhad ? n.vmhad->runner->state() : State::stop; };
    out_.final_state = fmt::format("{} {} ({}), {} {} ({})", a.name, module::to_string(state_of(a)),
                                   a.vmhad ? a.vmhad->runner->reason() : "-", b.name,
                                   module::to_string(state_of(b)), b.vmhad ? b.vmhad->runner->reason() : "-");
    if (end - last_transition < 60000) {
        violation(fmt::format("not settled: a transition {} ms before the end", end - last_transition));
    }
    const int running = (a.vm_running ? 1 : 0) + (b.vm_running ? 1 : 0);
    const bool split_brain = a.link == Link::split_brain ||
                             (split_brain_seen_ && a.link == Link::refused);
    if (running != 1 && !split_brain) {
        violation(fmt::format("settled with {} nodes running the VM: {}", running, out_.final_state));
    }
    if (running == 2) violation("settled with both nodes running the VM");
    if (a.link == Link::connected && b.link == Link::connected && a.writes != b.writes) {
        violation(fmt::format("connected and in sync, but the copies differ ({} vs {} writes)",
                              a.writes.size(), b.writes.size()));
    }
    if (!split_brain && running == 1 && !(a.link == Link::connected && b.link == Link::connected)) {
        violation(fmt::format("settled without the pair connected: {} / {}", module::to_string(a.link),
                              module::to_string(b.link)));
    }
    if (!options_.trace) out_.trace.assign(recent_.begin(), recent_.end());
    return out_;
}

}  // namespace

std::string describe_partition(int c) {
    static const char* const link[] = {"whole", "cut towards the witness", "cut from the witness", "cut both ways"};
    return fmt::format("nodes {}; hv1-witness {}; hv2-witness {}", (c & 16) ? "cut" : "whole", link[(c >> 2) & 3],
                       link[c & 3]);
}

Outcome run(const Options& options) {
    World w(options);
    return w.run();
}

}  // namespace vmha::sim
