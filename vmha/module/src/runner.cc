#include <vmha/module/runner.h>

#include <algorithm>
#include <vector>

#include <fmt/format.h>

namespace vmha::module {

namespace {

// Answers every queued operator command with one result, in order.
void answer_all(std::deque<Done>& waiters, const Status& result) {
    while (!waiters.empty()) {
        auto done = std::move(waiters.front());
        waiters.pop_front();
        done(result);
    }
}

nlohmann::json optional_id(std::uint64_t id) { return id == 0 ? nlohmann::json(nullptr) : nlohmann::json(id); }

// A non-negative integer (JSON has one number type; the parser calls small ones unsigned).
std::optional<std::uint64_t> as_id(const nlohmann::json& v) {
    if (v.is_number_unsigned()) return v.get<std::uint64_t>();
    if (v.is_number_integer() && v.get<std::int64_t>() >= 0) return static_cast<std::uint64_t>(v.get<std::int64_t>());
    return std::nullopt;
}

std::uint64_t read_id(const nlohmann::json& m, const char* key) {
    auto it = m.find(key);
    if (it == m.end()) return 0;
    return as_id(*it).value_or(0);
}

imagesync::meta::DataState to_meta(DataState d) {
    switch (d) {
        case DataState::up_to_date: return imagesync::meta::DataState::UpToDate;
        case DataState::inconsistent: return imagesync::meta::DataState::Inconsistent;
        case DataState::outdated: return imagesync::meta::DataState::Outdated;
        case DataState::unknown: break;
    }
    return imagesync::meta::DataState::Unknown;
}

nlohmann::json generations_json(const imagesync::meta::Generations& g) {
    return {{"current", g.current}, {"bitmap", g.bitmap}, {"history", g.history}};
}

std::optional<imagesync::meta::Generations> read_generations(const nlohmann::json& m) {
    auto it = m.find("generations");
    if (it == m.end() || !it->is_object()) return std::nullopt;
    imagesync::meta::Generations g;
    g.current = read_id(*it, "current");
    g.bitmap = read_id(*it, "bitmap");
    auto h = it->find("history");
    if (h == it->end() || !h->is_array() || h->size() != g.history.size()) return std::nullopt;
    for (std::size_t i = 0; i < g.history.size(); ++i) {
        auto id = as_id((*h)[i]);
        if (!id) return std::nullopt;
        g.history[i] = *id;
    }
    return g;
}

}  // namespace

ModuleRunner::ModuleRunner(RunnerConfig config, Clock& clock, ImagesyncPort& imagesync, VmPort& vm,
                           PeerPort& peer, Store& store, Observer& observer, LeasePort* lease,
                           FencePort* fence)
    : config_(std::move(config)),
      clock_(clock),
      imagesync_port_(imagesync),
      vm_(vm),
      peer_(peer),
      store_(store),
      observer_(observer),
      budget_(config_.restart_attempts, config_.restart_window),
      fence_port_(fence) {
    if (config_.lease) {
        if (!lease) internal_error(fmt::format("module \"{}\": a witness without a lease port", config_.module));
        lease_port_ = lease;
        lease_view_.emplace(config_.self, config_.lease->timing);
    }
    // Claim ids differ between the two nodes and between runs of one node.
    claim_counter_ = ((std::hash<std::string>{}(config_.self) ^ config_.claim_seed) & 0xffffffu) << 32;
}

ModuleRunner::~ModuleRunner() { *alive_ = false; }

// Rule 67: the fencing hook, once at a time; after a failure, again `fence_retry` later.
void ModuleRunner::start_fence() {
    if (!fence_port_ || fence_running_ || peer_fenced_) return;
    const TimePoint now = clock_.now();
    if (fence_failed_ && now - fence_failed_at_ < config_.fence_retry) return;
    fence_running_ = true;
    observer_.note(fmt::format("running the fencing hook: {} is silent and this node would start the VM",
                               config_.peer));
    std::weak_ptr<bool> alive = alive_;
    const std::uint64_t epoch = fence_epoch_;
    fence_port_->fence_peer([this, alive, epoch](Status st) {
        if (alive.expired()) return;
        fence_running_ = false;
        if (epoch != fence_epoch_) {
            observer_.note(fmt::format("the fencing hook's answer is ignored: {} was heard meanwhile", config_.peer));
        } else if (st) {
            peer_fenced_ = true;
            fence_failed_.reset();
            observer_.note(fmt::format("the fencing hook fenced {}", config_.peer));
        } else {
            fence_failed_ = st.error().message;
            fence_failed_at_ = clock_.now();
            observer_.note(fmt::format("the fencing hook failed, the VM is not started: {}", st.error().message));
            fence_retry_timer_ = clock_.after(config_.fence_retry + Duration(1), [this, alive] {
                if (alive.expired()) return;
                evaluate();
            });
        }
        evaluate();
    });
}

void ModuleRunner::start() {
    persisted_ = store_.load();
    started_ = persisted_.started;
    started_at_ = clock_.now();
    // A previous run of vmhad may have sent agreeing reports until now: the hold-off counts
    // from here.
    agreeing_out_ = started_at_;
    state_ = State::stop;
    reason_ = started_ ? "vmhad starting" : "stopped by the operator";
    if (!runs_vm(persisted_.last_state)) {
        poll();
        return;
    }
    // vmhad went away while this node ran the VM (or was stopping it). If the VM still runs
    // (vmhad was restarted or upgraded), re-attach to it as it was: its I/O never depended on
    // vmhad; the table then decides from there (a stop the operator asked for is finished). If
    // it does not run (the node itself went down), the peer may have taken over: decide afresh.
    // No decision, and no demotion of imagesync, before this check has an answer.
    busy_ = true;
    reattach();
}

void ModuleRunner::reattach() {
    std::weak_ptr<bool> alive = alive_;
    vm_.health([this, alive](VmHealth health, std::string why) {
        if (alive.expired()) return;
        if (health == VmHealth::unknown) {
            // The hypervisor cannot say (libvirtd restarting too): ask again, never guess.
            observer_.note(fmt::format("re-attach: the VM's state is unknown ({}); asking again", why));
            poll_timer_ = clock_.after(config_.poll, [this, alive] {
                if (alive.expired() || !*alive.lock()) return;
                reattach();
            });
            return;
        }
        busy_ = false;
        pending_ = false;
        if (health == VmHealth::running || health == VmHealth::paused_on_io_error) {
            state_ = persisted_.last_state;
            // Known before the first report: a paused VM whose disks went away does not count
            // as running for the peer (it may have taken over meanwhile).
            vm_paused_io_ = health == VmHealth::paused_on_io_error;
            reason_ = "vmhad restarted; re-attached to the running VM";
            observer_.note(reason_);
            if (config_.lease) {
                // Keep writing only with the lease (or the peer's agreement, once heard): ask
                // the witness before the first decision.
                lease_ask([this] { poll(); });
                return;
            }
        } else {
            observer_.note(fmt::format("this node ran the VM before vmhad stopped, but it does not "
                                       "run now ({}); deciding afresh", why));
        }
        poll();
    });
}

void ModuleRunner::poll() {
    std::weak_ptr<bool> alive = alive_;
    refresh_imagesync([this] {
        if (!busy_ && started_) check_vm();  // idle nodes too: status shows where the VM is
        repromote();
        demote_if_idle();
        release_fence();
        retry_refused_link();
        evaluate();
        extend_write_lease(false);
        send_report();
    });
    poll_timer_ = clock_.after(config_.poll, [this, alive] {
        if (alive.expired() || !*alive.lock()) return;
        poll();
    });
}

// A (re)started imagesyncd that has not reached its peer yet may be about to find it still
// primary. Once it has reached the peer (whatever the link became), it knows.
bool ModuleRunner::imagesync_settling() const {
    return imagesync_.up && !imagesync_reached_peer_ && clock_.now() - imagesync_up_since_ < config_.imagesync_settle;
}

void ModuleRunner::retry_soon() {
    std::weak_ptr<bool> alive = alive_;
    retry_timer_ = clock_.after(std::max(config_.poll / 5, Duration{50}), [this, alive] {
        if (alive.expired() || !*alive.lock()) return;
        refresh_imagesync([this] { evaluate(); });
    });
}

void ModuleRunner::refresh_imagesync(std::function<void()> then) {
    std::weak_ptr<bool> alive = alive_;
    if (!started_ && state_ == State::stop) {
        imagesync_ = {};
        then();
        return;
    }
    if (status_pending_) return;  // the last request has not answered yet: no pile-up
    status_pending_ = true;
    imagesync_port_.status([this, alive, then = std::move(then)](ImagesyncStatus status) {
        if (alive.expired()) return;
        status_pending_ = false;
        if (status.up && !imagesync_.up) {
            imagesync_up_since_ = clock_.now();
            imagesync_reached_peer_ = false;
        }
        // This side broke the link (imagesyncd restarted): the peer went on alone at once. A
        // status request that merely timed out is not a restart.
        if (status.up && status.instance != 0) {
            if (last_instance_ != 0 && status.instance != last_instance_) {
                last_in_sync_.reset();
                imagesync_up_since_ = clock_.now();
                imagesync_reached_peer_ = false;
            }
            last_instance_ = status.instance;
        }
        if (status.up && status.link != Link::down) imagesync_reached_peer_ = true;
        imagesync_ = status;
        remember_data();
        then();
    });
}

// The last known data state and generations survive imagesyncd's stop and vmhad's restart.
void ModuleRunner::remember_data() {
    if (!imagesync_.up) return;
    if (persisted_.data == imagesync_.data && persisted_.generations == imagesync_.generations &&
        persisted_.crashed_primary == imagesync_.crashed_primary && !persisted_.final) {
        return;
    }
    persisted_.final = false;  // it runs: what it holds may change from now on
    persisted_.data = imagesync_.data;
    persisted_.generations = imagesync_.generations;
    persisted_.crashed_primary = imagesync_.crashed_primary;
    if (auto st = store_.save(persisted_); !st) {
        observer_.note(fmt::format("saving the module state failed: {}", st.error().message));
    }
}

// imagesyncd is primary although this node does not run the VM (vmhad went away between a
// promotion and the VM's start, or between the VM's stop and the demotion): demote it, or it
// could neither receive the peer's writes nor let the peer's resync in.
void ModuleRunner::demote_if_idle() {
    if (runs_vm(state_) || busy_ || operator_prim_ || !imagesync_.up || !imagesync_.primary || demoting_) return;
    demoting_ = true;
    std::weak_ptr<bool> alive = alive_;
    imagesync_port_.demote([this, alive](Status st) {
        if (alive.expired()) return;
        demoting_ = false;
        if (!st) {
            observer_.note(fmt::format("demoting imagesync on an idle node failed: {}", st.error().message));
            return;
        }
        imagesync_.primary = false;
        observer_.note("demoted imagesync: this node does not run the VM");
        imagesync_port_.connect([](Status) {});
    });
}

// imagesync lost the peer and holds its write replies (fencing) until the peer cannot start the
// VM on a copy that lacks those writes: its report says its copy is not UpToDate (it marked
// it Outdated on reading this node's ALONE report) or its module is stopped, or it is lost
// on every heartbeat path.
void ModuleRunner::release_fence() {
    if (!imagesync_.up || !imagesync_.primary || !imagesync_.fencing || releasing_fence_) return;
    if (!may_write()) return;  // with a witness: neither the lease nor the peer's agreement
    // With a witness, going on alone is first recorded there: a renewal sent after the peer was
    // lost, which the peer reads before it would take over (rule 54).
    const bool peer_gone = liveness_ == Liveness::lost && (!config_.lease || (renewed_since_lost_ && lease_held()));
    const bool peer_outdated = channel_up_ && report_ &&
                               (report_->data != DataState::up_to_date || report_->state == State::stop);
    if (!peer_gone && !peer_outdated) return;
    releasing_fence_ = true;
    std::weak_ptr<bool> alive = alive_;
    imagesync_port_.resume_io([this, alive, peer_gone](Status st) {
        if (alive.expired()) return;
        releasing_fence_ = false;
        if (!st) {
            observer_.note(fmt::format("resuming I/O after fencing failed: {}", st.error().message));
            return;
        }
        imagesync_.fencing = false;
        observer_.note(peer_gone ? fmt::format("fencing done: {} is lost; writes go on alone", config_.peer)
                                 : fmt::format("fencing done: {}'s copy is Outdated; writes go on alone", config_.peer));
    });
}

// A handshake refused for a reason that roles can change ("this secondary has the newer data;
// promote it", no usable source yet) is tried again now and then. Split brain is not: the
// operator decides.
void ModuleRunner::retry_refused_link() {
    if (!imagesync_.up || imagesync_.link != Link::refused || busy_) return;
    if (clock_.now() - last_connect_retry_ < config_.refused_retry) return;
    last_connect_retry_ = clock_.now();
    imagesync_port_.connect([](Status) {});
}

// imagesyncd came back (restarted by its supervisor) as a secondary while this node runs the
// VM: promote it again, so that the paused VM can be resumed onto writable disks.
void ModuleRunner::repromote() {
    if (!runs_vm(state_) || busy_ || !imagesync_.up || imagesync_.primary || repromoting_) return;
    if (!may_start_vm_on(imagesync_.data)) return;  // decided by the table (rule 20 onwards)
    // The peer may have taken the VM over while the disks here were away: promote again only
    // knowing it did not (it reports not running it), or that it is gone while this copy was current.
    const bool peer_idle = channel_up_ && report_ && !report_->runs();
    const bool peer_gone = liveness_ == Liveness::lost && current_when_lost_;
    const bool alone_before = liveness_ == Liveness::unknown && persisted_.may_start_alone &&
                              clock_.now() - started_at_ >= config_.startup_grace;
    if (!(peer_idle || peer_gone || alone_before)) return;
    if (imagesync_settling() && imagesync_.link == Link::down) return;
    if (!may_write()) return;  // with a witness: rule 65 decides
    extend_write_lease(true);
    repromoting_ = true;
    std::weak_ptr<bool> alive = alive_;
    imagesync_port_.promote([this, alive](Status st) {
        if (alive.expired()) return;
        repromoting_ = false;
        if (!st) {
            observer_.note(fmt::format("promoting the restarted imagesyncd failed: {}", st.error().message));
            return;
        }
        imagesync_.primary = true;
        observer_.note("promoted the restarted imagesyncd again");
    });
}

void ModuleRunner::check_vm() {
    std::weak_ptr<bool> alive = alive_;
    const std::uint64_t epoch = transitions_;
    vm_.health([this, alive, epoch](VmHealth health, std::string reason) {
        if (alive.expired()) return;
        if (epoch != transitions_) return;  // asked before a transition: stale
        on_vm_health(health, std::move(reason));
    });
}

void ModuleRunner::on_vm_health(VmHealth health, std::string reason) {
    if (!runs_vm(state_) || busy_) return;  // our own stops and starts are not failures
    const bool was_paused = vm_paused_io_;
    vm_paused_io_ = health == VmHealth::paused_on_io_error;
    if (was_paused != vm_paused_io_) evaluate();
    switch (health) {
        case VmHealth::running:
            return;
        case VmHealth::unknown:
            return;  // the hypervisor did not answer; the next poll asks again
        case VmHealth::paused_on_io_error: {
            if (!imagesync_.up || !imagesync_.primary || resuming_ || !may_write()) return;
            resuming_ = true;
            std::weak_ptr<bool> alive = alive_;
            vm_.resume([this, alive](Status st) {
                if (alive.expired()) return;
                resuming_ = false;
                if (!st) observer_.note(fmt::format("resuming the VM failed: {}", st.error().message));
                else observer_.note("resumed the VM after its disks came back");
            });
            return;
        }
        case VmHealth::stopped:
            if (!vm_failed_) {
                vm_failed_ = reason.empty() ? std::string("the VM stopped") : reason;
                evaluate();
            }
            return;
    }
}

void ModuleRunner::on_checker(const std::string& name, CheckerAction action, bool failed,
                              std::string reason) {
    auto& c = checkers_[name];
    const bool changed = c.failed != failed;
    c.action = action;
    c.failed = failed;
    c.reason = fmt::format("checker {}: {}", name, reason);
    if (failed && action == CheckerAction::restart && runs_vm(state_) && !vm_failed_) {
        vm_failed_ = c.reason;
    }
    if (changed) evaluate();
}

void ModuleRunner::on_peer_liveness(Liveness liveness) {
    if (liveness == liveness_) return;
    if (liveness == Liveness::lost) {
        // Current when the peer was last heard (about a heartbeat timeout ago): in sync now, or
        // in sync until about when the peer fell silent — a node that dies takes its heartbeats
        // and its replication connection down together. A peer heard well after this node
        // stopped being in sync may have gone on alone meanwhile.
        const TimePoint last_heard = clock_.now() - config_.heartbeat_timeout;
        current_when_lost_ = current_with_peer() ||
                             (last_in_sync_ && last_heard <= *last_in_sync_ + config_.poll +
                                                                2 * config_.heartbeat_interval);
    }
    if (liveness == Liveness::lost) {
        peer_last_heard_ = clock_.now() - config_.heartbeat_timeout;
        peer_lost_at_ = clock_.now();
        renewed_since_lost_ = false;
    } else if (liveness == Liveness::alive) {
        // Heard again: a later loss needs the peer fenced anew.
        ++fence_epoch_;
        peer_fenced_ = false;
        fence_failed_.reset();
        peer_last_heard_.reset();
        peer_lost_at_.reset();
        peer_renewed_since_lost_ = false;
        renewed_since_lost_ = false;
    }
    liveness_ = liveness;
    // Running with a witness: renew now, so that the witness records that this node goes on
    // alone before its writes are acknowledged alone (release_fence).
    if (liveness == Liveness::lost && config_.lease && runs_vm(state_) && !lease_pending_) lease_ask(nullptr);
    evaluate();
}

void ModuleRunner::on_peer_channel(bool up) {
    if (up == channel_up_) return;
    channel_up_ = up;
    if (!up) {
        report_.reset();
    } else {
        refused_.reset();
        send_report();
    }
    evaluate();
}

void ModuleRunner::on_peer_refused(std::string reason) {
    refused_ = std::move(reason);
    evaluate();
}

void ModuleRunner::on_peer_message(const nlohmann::json& m) {
    try {
        read_report(m);
    } catch (const nlohmann::json::exception& e) {
        observer_.note(fmt::format("ignored a report from {} with a malformed field: {}", config_.peer, e.what()));
    }
}

void ModuleRunner::read_report(const nlohmann::json& m) {
    if (!m.is_object() || m.value("type", "") != "report") {
        observer_.note(fmt::format("ignored a message from {} that is not a report", config_.peer));
        return;
    }
    auto state = parse_state(m.value("state", ""));
    auto data = parse_data_state(m.value("data", ""));
    if (!state || !data) {
        observer_.note(fmt::format("ignored a report from {} with an unknown state or data state",
                                   config_.peer));
        return;
    }
    PeerReport r;
    r.state = *state;
    r.data = *data;
    r.fit = m.value("fit", true);
    r.claim = read_id(m, "claim");
    r.grant = read_id(m, "grant");
    r.handing_over = m.value("handing_over", false);
    r.disks_lost = m.value("vm_disks_lost", false);
    r.contending = m.value("contending", false);
    r.writable = m.value("writable", false);
    peer_generations_ = read_generations(m);
    peer_crashed_primary_ = m.value("crashed_primary", false);
    peer_reason_ = m.value("reason", "");
    peer_dirty_bytes_ = m.value("dirty_bytes", std::uint64_t{0});
    report_ = r;
    // Heard on the channel while lost on every heartbeat path: whether this copy is still as
    // new as the peer's is known again (the peer may have gone on alone meanwhile).
    if (liveness_ == Liveness::lost) current_when_lost_ = current_with_peer();
    if (!runs_vm(r.state) && !r.contending && !r.writable) {
        agreeing_in_ = clock_.now();
        extend_write_lease(false);
    } else {
        agreeing_in_.reset();
    }
    if (r.runs()) {
        handing_over_ = false;  // the peer took it
        operator_second_ = false;
        if (operator_prim_ && !runs_vm(state_)) {
            operator_prim_ = false;
            observer_.note(fmt::format("{} runs the VM: `vmha prim` withdrawn", config_.peer));
        }
        if (persisted_.may_start_alone && !runs_vm(state_)) {
            persisted_.may_start_alone = false;  // the peer runs it now: it is the last to run it
            if (auto st = store_.save(persisted_); !st) {
                observer_.note(fmt::format("saving the module state failed: {}", st.error().message));
            }
        }
    }
    evaluate();
}

Status ModuleRunner::op_start() {
    if (started_) {
        // Started already: the operator asks to try again. The restart attempts start over.
        budget_.reset();
        if (vm_failed_ && !runs_vm(state_)) vm_failed_.reset();
        observer_.note("start: the restart attempts start over");
        evaluate();
        return {};
    }
    started_ = true;
    persisted_.started = true;
    if (auto st = store_.save(persisted_); !st) return st;
    answer_all(stop_waiters_,
               Error(errc::busy, fmt::format("module \"{}\" was started again before it stopped", config_.module)));
    budget_.reset();
    observer_.note("started by the operator");
    std::weak_ptr<bool> alive = alive_;
    refresh_imagesync([this, alive] { evaluate(); });
    return {};
}

void ModuleRunner::op_stop(Done done) {
    if (!started_ && state_ == State::stop && !busy_) return done({});
    if (started_) {
        operator_prim_ = false;
        operator_second_ = false;
        started_ = false;
        persisted_.started = false;
        if (auto st = store_.save(persisted_); !st) return done(st);
        observer_.note("stopped by the operator");
    }
    stop_waiters_.push_back(std::move(done));
    evaluate();
}

Status ModuleRunner::swap_refusal() const {
    if (!runs_vm(state_)) {
        return Error(errc::invalid_argument,
                     fmt::format("module \"{}\" does not run the VM on {} (it is {}); swap it from "
                                 "the node that runs it", config_.module, config_.self, to_string(state_)));
    }
    auto busy = [&](std::string why) {
        return Error(errc::busy, fmt::format("module \"{}\": {} cannot take the VM over now: {}",
                                             config_.module, config_.peer, why));
    };
    if (restarting_) return busy(fmt::format("the VM is being restarted on {}", config_.self));
    const Snapshot s = snapshot();
    if (s.liveness != Liveness::alive) return busy(fmt::format("it is {}", to_string(s.liveness)));
    if (!s.channel_up || !s.report) return busy("the control channel to it is down");
    const PeerReport& p = *s.report;
    if (p.state != State::second && p.state != State::wait) return busy(fmt::format("it is {}", to_string(p.state)));
    if (p.data != DataState::up_to_date) {
        return busy(fmt::format("its copy is {}, not UpToDate", to_string(p.data)));
    }
    if (!p.fit) return busy(fmt::format("a checker there says it is unfit{}", peer_reason_.empty() ? "" : ": " + peer_reason_));
    // While connected no resync runs (imagesync's last resync report may linger in its status).
    if (s.link == Link::sync_source) {
        return busy(fmt::format("a resync to it is running ({} of {} bytes)", imagesync_.resync_done,
                                imagesync_.resync_total));
    }
    if (s.link != Link::connected) return busy(fmt::format("the replication link is {}", to_string(s.link)));
    if (!peer_eligible(s)) return busy("it is not SECOND, UpToDate, fit and in sync");  // belt and braces
    return {};
}

void ModuleRunner::op_swap(Done done) {
    if (auto st = swap_refusal(); !st) return done(st);
    swap_requested_ = true;
    swap_waiters_.push_back(std::move(done));
    evaluate();
}

void ModuleRunner::op_restart(Done done) {
    if (!runs_vm(state_)) {
        done(Error(errc::invalid_argument,
                   fmt::format("module \"{}\" does not run the VM on {} (it is {}: {}); restart it "
                               "where it runs", config_.module, config_.self, to_string(state_), reason_)));
        return;
    }
    if (busy_ || restarting_) {
        done(Error(errc::busy, fmt::format("module \"{}\" is changing state on {}; try again when it "
                                           "is {}", config_.module, config_.self, to_string(state_))));
        return;
    }
    busy_ = true;
    restarting_ = true;
    ++transitions_;  // health answers asked before the restart are stale
    observer_.note("restarting the VM (operator): a graceful shutdown, then a start; no failover");
    std::weak_ptr<bool> alive = alive_;
    auto finished = [this, alive, done](Status st) {
        if (alive.expired()) return;
        busy_ = false;
        restarting_ = false;
        ++transitions_;
        done(st);
        if (pending_) {
            pending_ = false;
            evaluate();
        }
    };
    vm_.stop([this, alive, finished](Status st) {
        if (alive.expired()) return;
        if (!st) {
            fail_effect("stopping the VM for a restart", st);
            return finished(st);
        }
        observer_.starting_vm();
        vm_.start([this, alive, finished](Status vst) {
            if (alive.expired()) return;
            if (vst) {
                vm_failed_.reset();
            } else {
                vm_failed_ = fmt::format("the VM failed to start again after a restart: {}", vst.error().message);
            }
            finished(vst);
        });
    });
}

DataState ModuleRunner::data_here() const { return imagesync_.up ? imagesync_.data : persisted_.data; }

Status ModuleRunner::prim_refusal(bool force) const {
    if (runs_vm(state_)) {
        return Error(errc::invalid_argument, fmt::format("module \"{}\" already runs the VM on {} ({})",
                                                         config_.module, config_.self, to_string(state_)));
    }
    if (channel_up_ && report_ && report_->runs()) {
        return Error(errc::busy, fmt::format("module \"{}\": {} runs the VM ({}); `vmha swap {}` moves it "
                                             "here", config_.module, config_.peer, to_string(report_->state),
                                             config_.module));
    }
    for (const auto& [name, c] : checkers_) {
        if (c.failed && c.action == CheckerAction::wait) {
            return Error(errc::busy, fmt::format("module \"{}\": this node is unfit to run the VM: {}",
                                                 config_.module, c.reason));
        }
    }
    if (force) {
        if (!started_) {
            return Error(errc::invalid_argument,
                         fmt::format("module \"{}\" is stopped on {}; start it (`vmha start {}`), then run "
                                     "`vmha prim --force` again", config_.module, config_.self, config_.module));
        }
        if (!imagesync_.up) {
            return Error(errc::busy, fmt::format("module \"{}\": imagesyncd on {} is not answering yet; try "
                                                 "again", config_.module, config_.self));
        }
        if (busy_) {
            return Error(errc::busy, fmt::format("module \"{}\" is changing state on {}; try again",
                                                 config_.module, config_.self));
        }
        return {};
    }
    const DataState data = data_here();
    // A module never started here does not know its data yet: rule 62 waits for UpToDate.
    const bool never_read = !imagesync_.up && data == DataState::unknown;
    if (!may_start_vm_on(data) && !never_read) {
        return Error(errc::not_up_to_date,
                     fmt::format("module \"{}\": the data on {} is {}; starting the VM on it would lose "
                                 "acknowledged writes (`vmha prim --force {}` discards them)",
                                 config_.module, config_.self, to_string(data), config_.module));
    }
    if (imagesync_.up && imagesync_.link == Link::split_brain) {
        return Error(errc::split_brain,
                     fmt::format("module \"{}\": split brain with {}: both wrote without the other "
                                 "(`vmha prim --force {}` keeps the copy on {})",
                                 config_.module, config_.peer, config_.module, config_.self));
    }
    const Standing st = standing();
    if (st == Standing::behind || st == Standing::diverged) {
        return Error(errc::not_up_to_date,
                     fmt::format("module \"{}\": {} holds {} data than {} (`vmha prim --force {}` "
                                 "discards it)", config_.module, config_.peer,
                                 st == Standing::behind ? "newer" : "diverging", config_.self, config_.module));
    }
    return {};
}

nlohmann::json ModuleRunner::prim_preview() const {
    const DataState data = data_here();
    const Standing st = standing();
    const bool split = imagesync_.up && imagesync_.link == Link::split_brain;
    nlohmann::json j = {{"node", config_.self},
                        {"data_state", std::string(to_string(data))},
                        {"peer", config_.peer},
                        {"peer_data_state", report_ && channel_up_ ? nlohmann::json(std::string(to_string(report_->data)))
                                                                   : nlohmann::json(nullptr)},
                        {"standing", std::string(to_string(st))},
                        {"split_brain", split},
                        {"peer_dirty_bytes", report_ && channel_up_ ? nlohmann::json(peer_dirty_bytes_)
                                                                    : nlohmann::json(nullptr)}};
    std::vector<std::string> discards;
    if (!may_start_vm_on(data)) {
        discards.push_back(fmt::format("the data on {} is {}: the writes it lacks are lost for good, and "
                                       "{}'s copy is overwritten from it at the next resync",
                                       config_.self, to_string(data), config_.peer));
    }
    if (split || st == Standing::diverged || st == Standing::behind) {
        discards.push_back(fmt::format("{}'s copy holds writes that {} lacks{}; they are overwritten at the "
                                       "next resync", config_.peer, config_.self,
                                       report_ && channel_up_ ? fmt::format(" ({} bytes recorded dirty there)",
                                                                            peer_dirty_bytes_)
                                                              : std::string()));
    }
    if (!channel_up_ && discards.empty()) {
        discards.push_back(fmt::format("{} is not heard: whatever it wrote since it was last in sync with "
                                       "{} is overwritten at the next resync", config_.peer, config_.self));
    }
    j["discards"] = discards;
    return j;
}

void ModuleRunner::op_prim(bool force, Done done) {
    if (auto st = prim_refusal(force); !st) return done(st);
    operator_second_ = false;
    if (!started_) {
        operator_prim_ = true;
        observer_.note("`vmha prim`: this node starts as primary");
        done(op_start());
        return;
    }
    // In a split brain the forced promotion is what tells imagesync to keep this copy (the
    // peer's becomes the resync target at the next connection), even on UpToDate data.
    const bool split = imagesync_.up && imagesync_.link == Link::split_brain;
    if (!force || (may_start_vm_on(imagesync_.data) && !split)) {
        operator_prim_ = true;
        observer_.note("`vmha prim`: the operator chose this node to run the VM");
        evaluate();
        done({});
        return;
    }
    busy_ = true;
    observer_.note(split ? fmt::format("`vmha prim --force`: keeping the copy on {} in the split brain "
                                       "with {}; {}'s copy is discarded at the next connection",
                                       config_.self, config_.peer, config_.peer)
                         : fmt::format("`vmha prim --force`: promoting the {} data on {} anyway",
                                       to_string(imagesync_.data), config_.self));
    std::weak_ptr<bool> alive = alive_;
    imagesync_port_.promote_forced([this, alive, done, split](Status st) {
        if (alive.expired()) return;
        busy_ = false;
        pending_ = false;
        if (!st) {
            fail_effect("the forced promotion", st);
            done(st);
            evaluate();
            return;
        }
        imagesync_.primary = true;
        imagesync_.data = DataState::up_to_date;
        operator_prim_ = true;
        if (split) imagesync_port_.connect([](Status) {});  // the peer becomes the resync target
        done({});
        evaluate();
    });
}

Status ModuleRunner::op_second() {
    if (runs_vm(state_)) {
        return Error(errc::invalid_argument,
                     fmt::format("module \"{}\" runs the VM on {} ({}); `vmha swap {}` hands it to {}",
                                 config_.module, config_.self, to_string(state_), config_.module, config_.peer));
    }
    operator_prim_ = false;
    operator_second_ = true;
    observer_.note(fmt::format("`vmha second`: this node waits for {} to run the VM", config_.peer));
    if (!started_) return op_start();
    evaluate();
    return {};
}

Status ModuleRunner::op_failover(bool on) {
    if (persisted_.failover == on) return {};
    Persisted p = persisted_;
    p.failover = on;
    if (auto st = store_.save(p); !st) return st;
    persisted_ = p;
    observer_.note(on ? "failover on: this node may take the VM over from its peer"
                      : "failover off: this node never takes the VM over from its peer");
    evaluate();
    return {};
}

Snapshot ModuleRunner::snapshot() const {
    Snapshot s;
    s.self = config_.self;
    s.peer = config_.peer;
    s.current = state_;
    s.started = started_;
    s.imagesync_up = imagesync_.up;
    s.imagesync_settling = imagesync_settling();
    s.data = imagesync_.data;
    s.link = imagesync_.link;
    s.standing = standing();
    s.fresh_pair = imagesync_.up && imagesync_.generations.current == imagesync::meta::kJustCreated &&
                   peer_generations_ && peer_generations_->current == imagesync::meta::kJustCreated;
    s.liveness = liveness_;
    s.silent_since_start =
        liveness_ == Liveness::unknown && clock_.now() - started_at_ >= config_.startup_grace;
    s.current_when_lost = current_when_lost_;
    s.channel_up = channel_up_;
    s.report = channel_up_ ? report_ : std::nullopt;
    s.refused = refused_;
    s.may_start_alone = persisted_.may_start_alone;
    s.preferred = config_.preferred;
    s.own_claim = own_claim_;
    s.granted_to_peer = granted_;
    s.handing_over = handing_over_;
    for (const auto& [name, c] : checkers_) {
        if (!c.failed) continue;
        if (c.action == CheckerAction::wait && !s.unfit) s.unfit = c.reason;
        if (c.action == CheckerAction::failover && !s.failover) s.failover = c.reason;
    }
    s.vm_failed = vm_failed_;
    s.vm_disks_lost = vm_paused_io_ && !imagesync_.primary;
    s.imagesync_primary = imagesync_.primary;
    s.restart_left = budget_.remaining(clock_.now()) > 0;
    s.swap_requested = swap_requested_;
    s.failover_off = !persisted_.failover;
    s.operator_prim = operator_prim_;
    s.operator_second = operator_second_;
    if (config_.lease) {
        s.witness = true;
        s.lease_held = lease_held();
        s.peer_agrees = peer_agrees();
        s.hold_off_done = clock_.now() >= agreeing_out_ + hold_off(config_);
        s.lease_why = lease_why_;
        s.peer_renewed_since_lost = peer_renewed_since_lost_;
    }
    if (fence_port_) {
        s.fence_hook = true;
        s.peer_fenced = peer_fenced_;
        s.fence_failed = fence_failed_;
    }
    s.failback_due = config_.automatic_failback && !config_.preferred && peer_eligible_since_ &&
                     clock_.now() - *peer_eligible_since_ >= config_.failback_stable;
    return s;
}

void ModuleRunner::evaluate() {
    // The self-fence goes first, whatever is in flight: the writes must stop before the lease
    // can expire at the witness (rule 65 then stops the VM).
    if (config_.lease && runs_vm(state_) && imagesync_.up && imagesync_.primary && !may_write()) {
        self_fence();
    }
    schedule_lease_wake();
    if (busy_) {
        pending_ = true;
        return;
    }
    if (handing_over_ && clock_.now() - handing_over_since_ >= config_.handover_timeout) {
        handing_over_ = false;
        observer_.note(fmt::format("{} did not take the VM over within {} s; withdrawn",
                                   config_.peer, config_.handover_timeout.count() / 1000));
    }
    // The peer outdated by our absence: it runs the VM alone while we hold an old copy.
    // Or a split brain this node lost: the peer runs the VM on its own line of history.
    const bool not_connected = imagesync_.link == Link::down || imagesync_.link == Link::split_brain ||
                               imagesync_.link == Link::refused;
    // The report must say ALONE: a PRIM report is from before the link broke (the peer had us
    // in sync), and the link may have broken because the peer died.
    if (report_ && channel_up_ && report_->state == State::alone && report_->runs() &&
        !runs_vm(state_) && !busy_ &&
        imagesync_.up && !imagesync_.primary && imagesync_.data == DataState::up_to_date &&
        not_connected && !outdating_) {
        outdating_ = true;
        std::weak_ptr<bool> alive = alive_;
        imagesync_port_.outdate([this, alive](Status st) {
            if (alive.expired()) return;
            outdating_ = false;
            if (!st) {
                observer_.note(fmt::format("marking the data Outdated failed: {}", st.error().message));
                return;
            }
            observer_.note(fmt::format("{} runs the VM without this node's copy: the data here is "
                                       "now Outdated", config_.peer));
            imagesync_.data = DataState::outdated;
            evaluate();
        });
    }
    if (liveness_ != Liveness::lost && current_with_peer()) last_in_sync_ = clock_.now();
    Snapshot s = snapshot();
    if (runs_vm(state_) && peer_eligible(s)) {
        if (!peer_eligible_since_) peer_eligible_since_ = clock_.now();
    } else {
        peer_eligible_since_.reset();
    }
    Decision d = decide(s);
    bool report_changed = false;
    if (config_.lease) {
        const bool contend = d.contend;
        if (contend != contending_) {
            contending_ = contend;
            report_changed = true;
            if (contend) observer_.note(fmt::format("contending for the lease: {}", d.reason));
        }
        if ((contending_ || runs_vm(state_)) && !lease_pending_ && !lease_timer_) lease_tick();
        if (!contending_ && !runs_vm(state_) && !runs_vm(d.next)) release_lease();
    }
    if (d.run_fence) start_fence();
    if (d.grant != granted_) {
        granted_ = d.grant;
        report_changed = true;
    }
    if (d.claim && own_claim_ == 0) {
        own_claim_ = ++claim_counter_;
        report_changed = true;
    } else if (!d.claim && own_claim_ != 0 && !(runs_vm(d.next) && !runs_vm(state_))) {
        own_claim_ = 0;
        report_changed = true;
    }
    if (swap_requested_ && d.rule != 46) {
        // The swap could not be carried out now (the peer stopped being eligible).
        swap_requested_ = false;
        answer_all(swap_waiters_, Error(errc::busy, fmt::format("module \"{}\": the swap was abandoned: {}",
                                                                config_.module, d.reason)));
    }
    if (d.declare_initial) {
        busy_ = true;
        observer_.note(d.reason);
        std::weak_ptr<bool> alive = alive_;
        imagesync_port_.declare_initial_data([this, alive, d](Status st) {
            if (alive.expired()) return;
            if (!st) fail_effect("declaring the initial data", st);
            // Decide next on imagesync's new data state, not on the one read before.
            imagesync_port_.status([this, alive, d](ImagesyncStatus now) {
                if (alive.expired()) return;
                imagesync_ = now;
                remember_data();
                finish(state_, d);
            });
        });
        return;
    }
    if (d.next != state_ || d.restart_vm || d.hand_over) {
        apply(d);
    } else {
        if (d.reason != reason_ || d.rule != rule_) {
            reason_ = d.reason;
            rule_ = d.rule;
            report_changed = true;
        }
    }
    if (report_changed) send_report();
}

// A self-fence (rule 65) destroys the VM at once: its disks refuse writes already, so a guest
// shutdown could only hang until the timeout while the peer takes the VM over. Every other stop
// lets the guest shut down first.
void ModuleRunner::stop_vm(const Decision& d, Done done) {
    if (!d.power_off) return vm_.stop(std::move(done));
    observer_.note("powering the VM off at once (self-fence)");
    vm_.power_off(std::move(done));
}

void ModuleRunner::apply(const Decision& d) {
    const State from = state_;
    const State to = d.next;
    busy_ = true;
    std::weak_ptr<bool> alive = alive_;
    auto guard = [alive] { return !alive.expired(); };

    if (d.restart_vm) {
        const bool allowed = budget_.try_consume(clock_.now());
        observer_.note(fmt::format("restarting the VM (attempt {} of {} in the window): {}",
                                   budget_.used(clock_.now()), budget_.attempts(), d.reason));
        if (!allowed) internal_error("rule 43 chose a restart without a restart left");
        vm_.stop([this, guard, d](Status) {
            if (!guard()) return;
            observer_.starting_vm();
            vm_.start([this, guard, d](Status st) {
                if (!guard()) return;
                if (st) {
                    vm_failed_.reset();
                    for (auto& [n, c] : checkers_) {
                        if (c.action == CheckerAction::restart) c.failed = false;
                    }
                } else {
                    vm_failed_ = fmt::format("the VM failed to restart: {}", st.error().message);
                }
                finish(state_, d);
            });
        });
        return;
    }

    if (to == State::stop) {
        // Stop the VM, demote, read imagesync's final data state and generations (the peer
        // compares with them while this node is stopped), then stop imagesyncd.
        auto stop_imagesync = [this, guard, d] {
            imagesync_port_.status([this, guard, d](ImagesyncStatus last) {
                if (!guard()) return;
                imagesync_ = last;
                remember_data();
                imagesync_port_.stop([this, guard, d, last](Status st) {
                    if (!guard()) return;
                    if (!st) {
                        fail_effect("stopping imagesyncd", st);
                    } else if (last.up) {
                        persisted_.final = true;  // what the peer compares with while stopped
                        if (auto saved = store_.save(persisted_); !saved) {
                            observer_.note(fmt::format("saving the module state failed: {}", saved.error().message));
                        }
                    }
                    imagesync_ = {};
                    last_in_sync_.reset();
                    finish(State::stop, d);
                });
            });
        };
        auto demote_then_stop = [this, guard, stop_imagesync] {
            if (!imagesync_.primary) return stop_imagesync();
            imagesync_port_.demote([this, guard, stop_imagesync](Status st) {
                if (!guard()) return;
                if (!st) fail_effect("demoting imagesync", st);
                else imagesync_.primary = false;
                stop_imagesync();
            });
        };
        if (runs_vm(from)) {
            vm_.stop([this, guard, demote_then_stop, d](Status st) {
                if (!guard()) return;
                if (!st) {
                    // The VM still runs: its disks stay. The next decision tries again.
                    fail_effect("stopping the VM", st);
                    finish(state_, d);
                    return;
                }
                demote_then_stop();
            });
        } else {
            demote_then_stop();
        }
        return;
    }

    if (!runs_vm(to)) {
        auto connect = [this, guard, d, to] {
            imagesync_port_.connect([this, guard, d, to](Status st) {
                if (!guard()) return;
                if (!st) observer_.note(fmt::format("imagesync connect: {}", st.error().message));
                finish(to, d);
            });
        };
        if (runs_vm(from)) {
            stop_vm(d, [this, guard, d, connect](Status st) {
                if (!guard()) return;
                if (!st) {
                    // The VM still runs: demoting now would take its disks away. Stay.
                    fail_effect("stopping the VM", st);
                    finish(state_, d);
                    return;
                }
                imagesync_port_.demote([this, guard, d, connect](Status dst) {
                    if (!guard()) return;
                    if (!dst) fail_effect("demoting imagesync", dst);
                    else imagesync_.primary = false;
                    if (!d.hand_over || !dst) {
                        connect();
                        return;
                    }
                    // Hand over only if the peer holds every write, now that none can come: the
                    // link may have dropped while the VM was stopping. Writing without the peer
                    // always leaves a trace: a bitmap generation and dirty bytes.
                    imagesync_port_.status([this, guard, connect](ImagesyncStatus now) {
                        if (!guard()) return;
                        imagesync_ = now;
                        if (now.up && now.generations.bitmap == imagesync::meta::kNoGeneration &&
                            now.dirty_bytes == 0) {
                            handing_over_ = true;
                            handing_over_since_ = clock_.now();
                        } else {
                            observer_.note(fmt::format("not handing the VM over: {} lacks writes made "
                                                       "here ({} dirty bytes)", config_.peer, now.dirty_bytes));
                        }
                        connect();
                    });
                });
            });
        } else if (from == State::stop) {
            imagesync_port_.ensure_running([this, guard, d, connect](Status st) {
                if (!guard()) return;
                if (!st) {
                    fail_effect("starting imagesyncd", st);
                    finish(State::wait, d);
                    return;
                }
                connect();
            });
        } else {
            connect();
        }
        return;
    }

    // To ALONE or PRIM.
    if (runs_vm(from)) {
        finish(to, d);  // a label change: the peer started or stopped receiving writes
        return;
    }
    if (auto st = check_may_start_vm(imagesync_.data, config_.module, config_.self); !st) {
        fail_effect("starting the VM", st);
        finish(from, d);
        return;
    }
    // Persisted first: a vmhad that dies from here on finds, at its restart, that this node may
    // run the VM, and checks before it demotes anything.
    {
        Persisted p = persisted_;
        p.last_state = to;
        if (auto saved = store_.save(p); !saved) {
            fail_effect("saving the module state", saved);
            finish(from, d);
            return;
        }
        persisted_ = p;
    }
    extend_write_lease(true);
    imagesync_port_.promote([this, guard, d, to, from](Status st) {
        if (!guard()) return;
        if (st && !may_write()) {
            // The lease (or the peer's agreement) lapsed while the promotion was in flight.
            imagesync_port_.demote([this, guard, d, from](Status dst) {
                if (!guard()) return;
                if (dst) imagesync_.primary = false;
                observer_.note(fmt::format("not starting the VM: the lease lapsed during the "
                                           "promotion ({})", lease_why_));
                finish(from, d);
            });
            return;
        }
        if (!st) {
            fail_effect("promoting imagesync", st);
            finish(from, d);
            // Taking over from a lost peer: imagesync refuses while its replication link to
            // the old primary stands, which its own timeout ends about now. Ask again soon
            // rather than at the next poll: this is the failover's critical path.
            if (liveness_ == Liveness::lost) retry_soon();
            return;
        }
        own_claim_ = 0;
        imagesync_.primary = true;  // known now; the next status poll confirms
        observer_.starting_vm();
        vm_.start([this, guard, d, to](Status vst) {
            if (!guard()) return;
            if (!vst) {
                // A failed start counts as a restart attempt: the budget bounds the retries.
                vm_failed_ = fmt::format("the VM failed to start: {}", vst.error().message);
                (void)budget_.try_consume(clock_.now());
            } else {
                vm_failed_.reset();
            }
            finish(to, d);
        });
    });
}

void ModuleRunner::finish(State next, const Decision& d) {
    const State from = state_;
    state_ = next;
    ++transitions_;
    if (next == d.next) {
        reason_ = d.reason;
        rule_ = d.rule;
    }
    if (from != next) observer_.transition(from, next, rule_, reason_);
    if (next == State::stop && !started_) {
        answer_all(stop_waiters_, {});
    }
    // Stopped here, the peer may go on alone: this copy is no longer known to be current.
    if (next == State::stop) current_when_lost_ = false;
    if (runs_vm(next)) operator_prim_ = false;
    // Persist what a restart of vmhad (or the node) must know.
    Persisted p = persisted_;
    p.last_state = next;
    // "The last to run the VM, alone": set in ALONE; gone once the peer shares the data again,
    // or this node is stopped (the peer may run the VM meanwhile).
    if (next == State::alone) p.may_start_alone = true;
    if (next == State::prim || next == State::second || next == State::stop) p.may_start_alone = false;
    if (!(p.last_state == persisted_.last_state && p.may_start_alone == persisted_.may_start_alone)) {
        if (auto st = store_.save(p); !st) observer_.note(fmt::format("saving the module state failed: {}", st.error().message));
        persisted_ = p;
    }
    if (d.hand_over || d.rule == 46) {
        // The swap is done only if the VM was stopped here and announced to the peer.
        swap_requested_ = false;
        answer_all(swap_waiters_, handing_over_ ? Status{}
                                                : Status(Error(errc::busy, fmt::format("module \"{}\": the swap did not happen: {}",
                                                                                       config_.module, reason_))));
    }
    busy_ = false;
    send_report();
    if (pending_ || from != next) {
        pending_ = false;
        evaluate();
    }
}

void ModuleRunner::fail_effect(const std::string& what, const Status& status) {
    observer_.note(fmt::format("{} failed: {}", what, status.error().message));
}

nlohmann::json ModuleRunner::report() const {
    // Unfit: a "wait" checker failed, or the VM failed here with no restart left.
    bool fit = !(vm_failed_ && budget_.remaining(clock_.now()) == 0);
    for (const auto& [n, c] : checkers_) {
        if (c.failed && c.action == CheckerAction::wait) fit = false;
    }
    return {{"type", "report"},
            {"module", config_.module},
            {"node", config_.self},
            {"state", std::string(to_string(state_))},
            {"reason", reason_},
            {"data", std::string(to_string(imagesync_.up ? imagesync_.data : persisted_.data))},
            {"fit", fit},
            {"claim", optional_id(own_claim_)},
            {"grant", optional_id(granted_)},
            {"handing_over", handing_over_},
            {"vm_disks_lost", runs_vm(state_) && vm_paused_io_ && !imagesync_.primary},
            // Generations the peer can compare with: imagesyncd's own, or those read just before
            // vmhad stopped it cleanly; never ones that may lag behind its metadata (null: the
            // peer's standing is unknown, so it does not start the VM on "in sync").
            {"generations", imagesync_.up ? generations_json(imagesync_.generations)
                            : persisted_.final ? generations_json(persisted_.generations)
                                               : nlohmann::json(nullptr)},
            {"crashed_primary", imagesync_.up ? imagesync_.crashed_primary : persisted_.crashed_primary},
            {"dirty_bytes", imagesync_.dirty_bytes},
            {"failover", persisted_.failover},
            {"contending", contending_},
            {"writable", imagesync_.up && imagesync_.primary}};
}

// Whether this copy is known to be as new as the peer's right now.
bool ModuleRunner::current_with_peer() const {
    if (!imagesync_.up || imagesync_.data != DataState::up_to_date) return false;
    if (imagesync_.link == Link::connected) return true;
    if (runs_vm(state_)) return true;  // the writer's copy is the newest
    if (!channel_up_ || !report_ || report_->runs()) return false;
    const Standing st = standing();
    return st == Standing::same || st == Standing::ahead;
}

Standing ModuleRunner::standing() const {
    if (!channel_up_ || !report_ || !peer_generations_) return Standing::unknown;
    imagesync::meta::NodeMeta self;
    self.gen = imagesync_.up ? imagesync_.generations : persisted_.generations;
    self.data_state = to_meta(imagesync_.up ? imagesync_.data : persisted_.data);
    self.crashed_primary = imagesync_.up ? imagesync_.crashed_primary : persisted_.crashed_primary;
    imagesync::meta::NodeMeta peer;
    peer.gen = *peer_generations_;
    peer.data_state = to_meta(report_->data);
    peer.crashed_primary = peer_crashed_primary_;
    imagesync::meta::Roles roles;
    roles.self_primary = runs_vm(state_);
    roles.peer_primary = runs_vm(report_->state);
    roles.self_wins_ties = config_.preferred;
    using imagesync::meta::SyncKind;
    switch (imagesync::meta::decide(self, peer, roles).kind) {
        case SyncKind::in_sync: return Standing::same;
        case SyncKind::self_is_source_bitmap:
        case SyncKind::self_is_source_full: return Standing::ahead;
        case SyncKind::self_is_target_bitmap:
        case SyncKind::self_is_target_full: return Standing::behind;
        case SyncKind::split_brain: return Standing::diverged;
        case SyncKind::unrelated:
        case SyncKind::no_usable_source: break;
    }
    return Standing::unknown;
}

void ModuleRunner::send_report() {
    if (!channel_up_) return;
    nlohmann::json r = report();
    // An agreeing report: the peer may keep writing on its word (rule 65) for a while.
    if (!runs_vm(state_) && !contending_ && !(imagesync_.up && imagesync_.primary)) agreeing_out_ = clock_.now();
    peer_.send(r);
}

nlohmann::json ModuleRunner::status_json() const {
    nlohmann::json peer = nullptr;
    nlohmann::json j = {
        {"name", config_.module},
        {"state", std::string(to_string(state_))},
        {"reason", reason_},
        {"rule", rule_},
        {"data_state", std::string(to_string(imagesync_.data))},
        {"peer",
         {{"node", config_.peer},
          {"liveness", std::string(to_string(liveness_))},
          {"channel", channel_up_ ? "up" : "down"},
          {"state", report_ ? nlohmann::json(std::string(to_string(report_->state))) : nlohmann::json(nullptr)},
          {"reason", report_ ? nlohmann::json(peer_reason_) : nlohmann::json(nullptr)},
          {"data_state", report_ ? nlohmann::json(std::string(to_string(report_->data))) : nlohmann::json(nullptr)}}},
        {"replication",
         {{"connection", std::string(to_string(imagesync_.link))},
          {"role", imagesync_.up ? (imagesync_.primary ? "primary" : "secondary") : "down"},
          {"dirty_bytes", imagesync_.dirty_bytes},
          {"resync", imagesync_.resync_total == 0
                         ? nlohmann::json(nullptr)
                         : nlohmann::json{{"bytes_done", imagesync_.resync_done},
                                          {"bytes_total", imagesync_.resync_total}}},
          {"split_brain", imagesync_.split_brain}}},
        {"restarts",
         {{"used", budget_.used(clock_.now())},
          {"attempts", budget_.attempts()},
          {"window_seconds", std::chrono::duration_cast<std::chrono::seconds>(budget_.window()).count()}}},
    };
    nlohmann::json checkers = nlohmann::json::array();
    for (const auto& [name, c] : checkers_) {
        checkers.push_back({{"name", name}, {"verdict", c.failed ? "failed" : "healthy"}, {"reason", c.reason}});
    }
    j["checkers"] = std::move(checkers);
    j["failover"] = persisted_.failover;
    if (config_.lease) {
        j["lease"] = {{"held", lease_held()},
                      {"left_ms", lease_view_->left(clock_.now()).count()},
                      {"epoch", lease_view_->epoch()},
                      {"peer_agrees", peer_agrees()},
                      {"contending", contending_},
                      {"witness", lease_why_}};
    } else {
        j["lease"] = nullptr;
    }
    if (fence_port_) {
        j["fencing"] = {{"running", fence_running_},
                        {"peer_fenced", peer_fenced_},
                        {"last_failure", fence_failed_ ? nlohmann::json(*fence_failed_) : nlohmann::json(nullptr)}};
    } else {
        j["fencing"] = nullptr;
    }
    j["operator"] = operator_prim_     ? nlohmann::json("prim")
                    : operator_second_ ? nlohmann::json("second")
                                       : nlohmann::json(nullptr);
    return j;
}

}  // namespace vmha::module
