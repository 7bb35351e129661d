// FakeHypervisor: an in-memory hypervisor that behaves like the libvirt backend.
#include <vmha/hypervisor/fake.h>

#include <utility>

#include <fmt/format.h>

#include <vmha/hypervisor/domain_xml.h>

namespace vmha::hv {

std::string_view to_string(FakeHypervisor::Op op) {
    using Op = FakeHypervisor::Op;
    switch (op) {
        case Op::define: return "define";
        case Op::undefine: return "undefine";
        case Op::start: return "start";
        case Op::shutdown: return "shutdown";
        case Op::destroy: return "destroy";
        case Op::resume: return "resume";
        case Op::status: return "status";
        case Op::ping_guest_agent: return "ping_guest_agent";
        case Op::watch: return "watch";
    }
    internal_error("unknown FakeHypervisor::Op");
}

FakeHypervisor::FakeHypervisor(Delivery delivery) : delivery_(delivery) {}

std::optional<Error> FakeHypervisor::injected_failure(Op op, const std::string& domain) {
    auto it = failures_.find(op);
    if (it == failures_.end() || it->second.first <= 0) return std::nullopt;
    const errc code = it->second.second;
    if (--it->second.first == 0) failures_.erase(it);
    record(op, domain, false, std::string(errc_name(code)));
    return Error(code, fmt::format("domain \"{}\": {} failed: injected {} (fake hypervisor)", domain,
                                   to_string(op), errc_name(code)));
}

void FakeHypervisor::emit(const std::string& domain, EventKind kind, std::string detail) {
    if (!handler_) return;
    queue_.push_back(LifecycleEvent{domain, kind, std::move(detail)});
}

void FakeHypervisor::record(Op op, const std::string& domain, bool ok, std::string note) {
    calls_.push_back(Call{op, domain, ok, std::move(note)});
}

Status FakeHypervisor::finish(Op op, const std::string& domain, Status result, std::string note) {
    if (!result.ok() && note.empty()) note = std::string(errc_name(errc::hypervisor_error));
    record(op, domain, result.ok(), std::move(note));
    return result;
}

void FakeHypervisor::flush_synchronous(std::unique_lock<std::mutex>& lock) {
    if (delivery_ != Delivery::synchronous) return;
    std::vector<LifecycleEvent> events = std::exchange(queue_, {});
    EventHandler handler = handler_;
    lock.unlock();
    if (handler) {
        for (const LifecycleEvent& event : events) handler(event);
    }
}

namespace {
Error not_defined(const std::string& domain) {
    return Error(errc::not_found, fmt::format("domain \"{}\": no such domain (fake hypervisor)", domain));
}
}  // namespace

Status FakeHypervisor::define(const DomainSpec& spec) {
    std::unique_lock lock(mu_);
    if (auto failure = injected_failure(Op::define, spec.name)) return std::move(*failure);
    Result<std::string> xml = rewrite_domain_xml(spec);
    if (!xml) {
        record(Op::define, spec.name, false, std::string(errc_name(errc::invalid_argument)));
        return std::move(xml).error();
    }
    Domain& d = domains_[spec.name];
    d.xml = std::move(*xml);
    d.persistent = true;
    emit(spec.name, EventKind::defined, "added");
    record(Op::define, spec.name, true, {});
    flush_synchronous(lock);
    return {};
}

Status FakeHypervisor::undefine(const std::string& domain) {
    std::unique_lock lock(mu_);
    if (auto failure = injected_failure(Op::undefine, domain)) return std::move(*failure);
    auto it = domains_.find(domain);
    if (it == domains_.end() || !it->second.persistent) return finish(Op::undefine, domain, {}, "absent");
    if (it->second.status.active()) {
        it->second.persistent = false;  // stays running, transient, like libvirt
    } else {
        domains_.erase(it);
    }
    emit(domain, EventKind::undefined, "removed");
    record(Op::undefine, domain, true, {});
    flush_synchronous(lock);
    return {};
}

Status FakeHypervisor::start(const std::string& domain) {
    std::unique_lock lock(mu_);
    if (auto failure = injected_failure(Op::start, domain)) return std::move(*failure);
    auto it = domains_.find(domain);
    if (it == domains_.end()) return finish(Op::start, domain, not_defined(domain), "absent");
    Domain& d = it->second;
    if (d.status.runs()) return finish(Op::start, domain, {}, "running already");
    if (d.status.active()) {
        return finish(Op::start, domain,
                      Error(errc::hypervisor_error,
                            fmt::format("domain \"{}\": cannot start: libvirt: \"Requested operation "
                                        "is not valid: domain is already running\" (fake)",
                                        domain)),
                      {});
    }
    d.status = {DomainState::running, "booted"};
    emit(domain, EventKind::started, "booted");
    record(Op::start, domain, true, {});
    flush_synchronous(lock);
    return {};
}

Status FakeHypervisor::shutdown(const std::string& domain, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    if (auto failure = injected_failure(Op::shutdown, domain)) return std::move(*failure);
    auto it = domains_.find(domain);
    if (it == domains_.end()) return finish(Op::shutdown, domain, {}, "absent");
    if (!it->second.status.active()) return finish(Op::shutdown, domain, {}, "shut off already");
    if (!it->second.shutdown_hangs && it->second.status.runs()) {
        emit(domain, EventKind::shutting_down, "guest");
        it->second.status = {DomainState::shutoff, "shutdown"};
        emit(domain, EventKind::stopped, "shutdown");
        if (!it->second.persistent) domains_.erase(it);
        record(Op::shutdown, domain, true, "acpi");
        flush_synchronous(lock);
        return {};
    }
    // The guest ignores the request: wait the timeout (virtually), then power off. A paused
    // guest cannot see the request: powered off at once.
    const bool waits = it->second.status.runs();
    if (waits) {
        auto sleep = sleep_;
        lock.unlock();
        if (sleep) sleep(timeout);
        lock.lock();
    }
    it = domains_.find(domain);
    if (it != domains_.end() && it->second.status.active()) {
        it->second.status = {DomainState::shutoff, "destroyed"};
        emit(domain, EventKind::stopped, "destroyed");
        if (!it->second.persistent) domains_.erase(it);
    }
    record(Op::shutdown, domain, true, waits ? "destroyed after timeout" : "destroyed (paused)");
    flush_synchronous(lock);
    return {};
}

Status FakeHypervisor::destroy(const std::string& domain) {
    std::unique_lock lock(mu_);
    if (auto failure = injected_failure(Op::destroy, domain)) return std::move(*failure);
    auto it = domains_.find(domain);
    if (it == domains_.end()) return finish(Op::destroy, domain, {}, "absent");
    if (!it->second.status.active()) return finish(Op::destroy, domain, {}, "shut off already");
    it->second.status = {DomainState::shutoff, "destroyed"};
    emit(domain, EventKind::stopped, "destroyed");
    if (!it->second.persistent) domains_.erase(it);
    record(Op::destroy, domain, true, {});
    flush_synchronous(lock);
    return {};
}

Status FakeHypervisor::resume(const std::string& domain) {
    std::unique_lock lock(mu_);
    if (auto failure = injected_failure(Op::resume, domain)) return std::move(*failure);
    auto it = domains_.find(domain);
    if (it == domains_.end()) return finish(Op::resume, domain, not_defined(domain), "absent");
    Domain& d = it->second;
    if (d.status.runs()) return finish(Op::resume, domain, {}, "running already");
    if (d.status.state != DomainState::paused) {
        return finish(Op::resume, domain,
                      Error(errc::hypervisor_error,
                            fmt::format("domain \"{}\": cannot resume: libvirt: \"Requested "
                                        "operation is not valid: domain is not running\" (fake)",
                                        domain)),
                      {});
    }
    const bool was_io_error = d.status.paused_on_io_error();
    d.status = {DomainState::running, "unpaused"};
    emit(domain, EventKind::resumed, "unpaused");
    std::string note;
    if (was_io_error && d.pause_again > 0) {
        --d.pause_again;
        d.status = {DomainState::paused, "ioerror"};
        emit(domain, EventKind::suspended, "ioerror");
        note = "paused again on ioerror";
    }
    record(Op::resume, domain, true, std::move(note));
    flush_synchronous(lock);
    return {};
}

Result<DomainStatus> FakeHypervisor::status(const std::string& domain) {
    std::unique_lock lock(mu_);
    if (auto failure = injected_failure(Op::status, domain)) return std::move(*failure);
    auto it = domains_.find(domain);
    record(Op::status, domain, true, {});
    if (it == domains_.end()) return DomainStatus{DomainState::absent, ""};
    return it->second.status;
}

Status FakeHypervisor::ping_guest_agent(const std::string& domain, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    if (auto failure = injected_failure(Op::ping_guest_agent, domain)) return std::move(*failure);
    auto it = domains_.find(domain);
    if (it == domains_.end()) return finish(Op::ping_guest_agent, domain, not_defined(domain), "absent");
    if (!it->second.status.runs()) {
        return finish(Op::ping_guest_agent, domain,
                      Error(errc::hypervisor_error,
                            fmt::format("domain \"{}\": guest agent: libvirt: \"Requested operation "
                                        "is not valid: domain is not running\" (fake)",
                                        domain)),
                      {});
    }
    if (!it->second.agent_answers) {
        return finish(Op::ping_guest_agent, domain,
                      Error(errc::timeout,
                            fmt::format("domain \"{}\": the guest agent did not answer guest-ping "
                                        "within {} ms (fake)",
                                        domain, timeout.count())),
                      std::string(errc_name(errc::timeout)));
    }
    record(Op::ping_guest_agent, domain, true, {});
    return {};
}

Status FakeHypervisor::watch(EventHandler handler) {
    std::unique_lock lock(mu_);
    if (auto failure = injected_failure(Op::watch, std::string())) return std::move(*failure);
    handler_ = std::move(handler);
    record(Op::watch, {}, true, {});
    return {};
}

void FakeHypervisor::fail_next(Op op, int count, errc code) {
    std::lock_guard lock(mu_);
    if (count <= 0) {
        failures_.erase(op);
    } else {
        failures_[op] = {count, code};
    }
}

void FakeHypervisor::crash(const std::string& domain) {
    std::unique_lock lock(mu_);
    auto it = domains_.find(domain);
    if (it == domains_.end() || !it->second.status.active()) return;
    it->second.status = {DomainState::shutoff, "crashed"};
    emit(domain, EventKind::stopped, "crashed");
    if (!it->second.persistent) domains_.erase(it);
    flush_synchronous(lock);
}

void FakeHypervisor::pause_on_io_error(const std::string& domain) {
    std::unique_lock lock(mu_);
    auto it = domains_.find(domain);
    if (it == domains_.end() || !it->second.status.runs()) return;
    it->second.status = {DomainState::paused, "ioerror"};
    emit(domain, EventKind::suspended, "ioerror");
    flush_synchronous(lock);
}

void FakeHypervisor::pause_again_after_resume(const std::string& domain, int count) {
    std::lock_guard lock(mu_);
    if (auto it = domains_.find(domain); it != domains_.end()) it->second.pause_again = count;
}

void FakeHypervisor::set_shutdown_hangs(const std::string& domain, bool hangs) {
    std::lock_guard lock(mu_);
    if (auto it = domains_.find(domain); it != domains_.end()) it->second.shutdown_hangs = hangs;
}

void FakeHypervisor::set_guest_agent_answers(const std::string& domain, bool answers) {
    std::lock_guard lock(mu_);
    if (auto it = domains_.find(domain); it != domains_.end()) it->second.agent_answers = answers;
}

void FakeHypervisor::guest_powers_off(const std::string& domain) {
    std::unique_lock lock(mu_);
    auto it = domains_.find(domain);
    if (it == domains_.end() || !it->second.status.runs()) return;
    emit(domain, EventKind::shutting_down, "guest");
    it->second.status = {DomainState::shutoff, "shutdown"};
    emit(domain, EventKind::stopped, "shutdown");
    if (!it->second.persistent) domains_.erase(it);
    flush_synchronous(lock);
}

void FakeHypervisor::set_sleep(std::function<void(std::chrono::milliseconds)> sleep) {
    std::lock_guard lock(mu_);
    sleep_ = std::move(sleep);
}

std::vector<FakeHypervisor::Call> FakeHypervisor::calls() const {
    std::lock_guard lock(mu_);
    return calls_;
}

std::vector<FakeHypervisor::Call> FakeHypervisor::calls(Op op) const {
    std::lock_guard lock(mu_);
    std::vector<Call> result;
    for (const Call& call : calls_) {
        if (call.op == op) result.push_back(call);
    }
    return result;
}

void FakeHypervisor::clear_calls() {
    std::lock_guard lock(mu_);
    calls_.clear();
}

std::optional<std::string> FakeHypervisor::defined_xml(const std::string& domain) const {
    std::lock_guard lock(mu_);
    auto it = domains_.find(domain);
    if (it == domains_.end() || !it->second.persistent) return std::nullopt;
    return it->second.xml;
}

std::vector<LifecycleEvent> FakeHypervisor::pending_events() const {
    std::lock_guard lock(mu_);
    return queue_;
}

std::size_t FakeHypervisor::deliver_events() {
    std::unique_lock lock(mu_);
    std::vector<LifecycleEvent> events = std::exchange(queue_, {});
    EventHandler handler = handler_;
    lock.unlock();
    if (handler) {
        for (const LifecycleEvent& event : events) handler(event);
    }
    return events.size();
}

}  // namespace vmha::hv
