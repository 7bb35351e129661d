// The module runner's lease rules (runner.h, decide.h rules 65 and 66, docs/witness.md).
#include <vmha/module/runner.h>

#include <algorithm>

#include <fmt/format.h>

namespace vmha::module {

Duration agreement_window(const RunnerConfig& c) { return c.heartbeat_timeout + c.poll; }

Duration hold_off(const RunnerConfig& c) {
    const double drift = c.lease ? c.lease->timing.drift : 0.0;
    const Duration margin = c.lease ? c.lease->timing.margin : Duration::zero();
    // The peer stops trusting our report W after receiving it, and needs the margin to stop
    // writing; both on its clock (up to 2*drift faster than ours, counting ours slower too).
    // The report itself may take up to a heartbeat timeout to arrive.
    const auto peer_side = static_cast<double>((agreement_window(c) + margin).count()) * (1.0 + 2 * drift);
    return Duration(static_cast<Duration::rep>(peer_side) + 1) + c.heartbeat_timeout;
}

// ---------------------------------------------------------------------------- the lease
// With a witness (docs/witness.md, "What vmhad does with the lease"): a node writes only while
// it holds the lease or its peer agrees (rule 65), and starts writing only with the lease and
// the hold-off over, or with the peer's grant while it agrees (rule 66).

bool ModuleRunner::lease_held() const { return lease_view_ && lease_view_->holds(clock_.now()); }

bool ModuleRunner::peer_agrees() const {
    if (!config_.lease) return false;
    if (!channel_up_ || !report_ || !agreeing_in_) return false;
    if (runs_vm(report_->state) || report_->contending || report_->writable) return false;
    return clock_.now() < *agreeing_in_ + agreement_window(config_);
}

bool ModuleRunner::may_write() const { return !config_.lease || lease_held() || peer_agrees(); }

void ModuleRunner::lease_tick() {
    lease_timer_.reset();
    if (!config_.lease) return;
    if (!(runs_vm(state_) || contending_ || (imagesync_.up && imagesync_.primary))) {
        release_lease();
        return;
    }
    lease_ask(nullptr);
}

// Acquires (or renews: the same call) the lease, then schedules the next attempt: a renewal
// interval while held or unanswered, the holder's remaining time when another node holds it.
void ModuleRunner::lease_ask(std::function<void()> then) {
    if (lease_pending_) {
        if (then) then();
        return;
    }
    lease_pending_ = true;
    const TimePoint sent = clock_.now();  // before the request: the view's rule
    std::weak_ptr<bool> alive = alive_;
    lease_port_->acquire(config_.lease->ttl, [this, alive, sent, then](Result<lease::LeaseState> r) {
        if (alive.expired()) return;
        lease_pending_ = false;
        const Duration ttl = config_.lease->ttl;
        Duration next = lease::LeaseView::renew_interval(ttl, config_.lease->timing);
        int kind = 0;
        if (!r) {
            kind = 1;
            lease_why_ = fmt::format("the witness did not answer: {}", r.error().message);
        } else {
            lease_view_->on_reply(sent, *r);
            if (r->held_by(config_.self)) {
                kind = 2;
                if (peer_lost_at_ && sent > *peer_lost_at_) renewed_since_lost_ = true;
                lease_granted_ = true;
                lease_why_ = fmt::format("held by {} (epoch {})", config_.self, r->epoch);
            } else if (r->holder.empty()) {
                kind = 3;
                lease_why_ = "the witness says it is free, but did not grant it";
            } else {
                kind = 4;
                lease_why_ = fmt::format("the witness says {} holds it for {} ms more", r->holder,
                                         r->remaining.count());
                // The peer renewed it at the earliest `sent - (ttl - remaining)`. Later than two
                // heartbeat intervals after it was last heard here, it was alive and cut off from
                // this node, and it acknowledges writes alone only after such a renewal
                // (release_fence): its copy may be newer.
                // A coarse arbiter (etcd: whole seconds, the holder named a while after the end)
                // only counts with its resolution allowed, and says nothing once it reads 0.
                if (r->holder == config_.peer && liveness_ == Liveness::lost && peer_last_heard_ &&
                    r->ttl >= r->remaining && r->remaining > r->resolution &&
                    sent - (r->ttl - r->remaining) - r->resolution >
                        *peer_last_heard_ + 2 * config_.heartbeat_interval &&
                    !peer_renewed_since_lost_) {
                    peer_renewed_since_lost_ = true;
                    observer_.note(fmt::format("the witness says {} renewed its lease after it was last "
                                               "heard here: it runs the VM on alone", config_.peer));
                }
                next = std::clamp(r->remaining + Duration(100), Duration(100), ttl);
            }
        }
        if (kind != lease_answer_kind_) {
            lease_answer_kind_ = kind;
            observer_.note(fmt::format("lease: {}", lease_why_));
        }
        extend_write_lease(false);
        std::weak_ptr<bool> alive2 = alive_;
        lease_timer_ = clock_.after(next, [this, alive2] {
            if (alive2.expired() || !*alive2.lock()) return;
            lease_tick();
        });
        if (then) then();
        else evaluate();
    });
}

// Gives the lease up once this node neither runs the VM, nor seeks to, nor serves the disks
// writable: a swap's new primary then acquires it at once.
void ModuleRunner::release_lease() {
    if (!config_.lease || !lease_granted_ || releasing_lease_ || lease_pending_ || busy_) return;
    if (runs_vm(state_) || contending_ || !imagesync_.up || imagesync_.primary) return;
    // After a failure, again at the renewal pace only (it expires at the witness anyway).
    const TimePoint now = clock_.now();
    if (now < release_retry_at_) return;
    release_retry_at_ = now + lease::LeaseView::renew_interval(config_.lease->ttl, config_.lease->timing);
    releasing_lease_ = true;
    lease_view_->drop();
    std::weak_ptr<bool> alive = alive_;
    lease_port_->release([this, alive](Status st) {
        if (alive.expired()) return;
        releasing_lease_ = false;
        if (!st) {
            observer_.note(fmt::format("releasing the lease failed: {}", st.error().message));
            return;  // it expires at the witness anyway
        }
        lease_granted_ = false;
        lease_why_ = "released";
        lease_answer_kind_ = -1;
        observer_.note("lease released: this node does not run the VM");
    });
}

// Neither the lease nor the peer's agreement: imagesyncd refuses writes now (a demotion drains
// and then refuses), whatever else is in flight; rule 65 stops the VM next.
void ModuleRunner::self_fence() {
    if (lease_fencing_) return;
    lease_fencing_ = true;
    observer_.note(fmt::format("self-fence: {} is not in agreement and the lease is not held ({}); "
                               "imagesync refuses writes now, the VM stops next",
                               config_.peer, lease_why_));
    std::weak_ptr<bool> alive = alive_;
    imagesync_port_.demote([this, alive](Status st) {
        if (alive.expired()) return;
        lease_fencing_ = false;
        if (!st) {
            // Tried again at the next poll (imagesyncd restarting comes back as a secondary).
            observer_.note(fmt::format("self-fence: demoting imagesync failed: {}", st.error().message));
            return;
        }
        imagesync_.primary = false;
        // The writes it made without the peer were never acknowledged (fenced, then failed by the
        // demotion) unless the fence was released: then they need not make a split brain.
        imagesync_port_.discard_unacknowledged([this, alive](Status d) {
            if (alive.expired()) return;
            if (d) {
                observer_.note(fmt::format("self-fence: the writes made without {} were never acknowledged: "
                                           "discarded, this copy will be resynced from it",
                                           config_.peer));
                imagesync_.data = DataState::inconsistent;
                remember_data();
                evaluate();
            } else if (!d.error().is(errc::unsupported)) {
                observer_.note(fmt::format("self-fence: {}", d.error().message));
            }
        });
        evaluate();
    });
}

// Tells imagesyncd how long it may accept writes without hearing from vmhad again: until the
// later of the lease's certain end and the peer's agreement's end.
void ModuleRunner::extend_write_lease(bool force) {
    if (!config_.lease || write_lease_unsupported_) return;
    if (!force && !runs_vm(state_) && !(imagesync_.up && imagesync_.primary)) return;
    const TimePoint now = clock_.now();
    TimePoint end = now;
    if (lease_held()) end = std::max(end, *lease_view_->certain_until());
    if (peer_agrees()) end = std::max(end, *agreeing_in_ + agreement_window(config_));
    if (end <= now) return;
    if (!force && end < write_lease_until_ + config_.poll / 4) return;
    write_lease_until_ = end;
    std::weak_ptr<bool> alive = alive_;
    imagesync_port_.write_lease(std::chrono::duration_cast<Duration>(end - now), [this, alive](Status st) {
        if (alive.expired() || st) return;
        if (st.error().is(errc::unsupported)) {
            write_lease_unsupported_ = true;
            observer_.note(fmt::format("imagesyncd keeps no write deadline ({}): only vmhad's self-fence "
                                       "stops the writes when the lease ends", st.error().message));
            return;
        }
        observer_.note(fmt::format("extending imagesync's write deadline failed: {}", st.error().message));
    });
}

// Decides again the moment the lease's certainty, the peer's agreement or the hold-off ends.
void ModuleRunner::schedule_lease_wake() {
    if (!config_.lease) return;
    const TimePoint now = clock_.now();
    std::optional<TimePoint> next;
    auto consider = [&](TimePoint t) {
        if (t > now && (!next || t < *next)) next = t;
    };
    if (auto until = lease_view_->certain_until()) consider(*until);
    if (agreeing_in_) consider(*agreeing_in_ + agreement_window(config_));
    consider(agreeing_out_ + hold_off(config_));
    if (!next) return;
    if (lease_wake_ && lease_wake_at_ == *next) return;
    lease_wake_at_ = *next;
    std::weak_ptr<bool> alive = alive_;
    lease_wake_ = clock_.after(std::chrono::duration_cast<Duration>(*next - now) + Duration(1), [this, alive] {
        if (alive.expired() || !*alive.lock()) return;
        lease_wake_.reset();
        evaluate();
    });
}

}  // namespace vmha::module
