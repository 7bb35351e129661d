// An in-memory Hypervisor with fault injection, for unit tests and the control-plane simulation.
//
// Deterministic: nothing happens by itself, no thread, no real sleep. State changes only
// through the Hypervisor calls and the fault-injection methods below, and each change produces
// the LifecycleEvents libvirt would send, in the same order.
//
// Event delivery (chosen at construction):
//   - Delivery::queued (default): events wait in a queue until the test calls
//     deliver_events(), which hands them to the watch() handler on the caller's thread. A
//     simulation drains the queue at the point of its schedule it wants, so the interleaving
//     of events with other work is explicit and reproducible.
//   - Delivery::synchronous: the handler runs inside the call that caused the event (after the
//     fake's lock is released, so the handler may call back into the fake).
// Events produced while no handler is set are dropped, as libvirt would.
//
// Time: shutdown() with a domain whose ACPI shutdown hangs "waits" its timeout by calling the
// sleep hook (default: does nothing) and then destroys the domain, like the libvirt backend.
//
// Thread-safe: every method may be called from any thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <vmha/error.h>
#include <vmha/hypervisor/hypervisor.h>

namespace vmha::hv {

class FakeHypervisor final : public Hypervisor {
public:
    enum class Op { define, undefine, start, shutdown, destroy, resume, status, ping_guest_agent, watch };
    enum class Delivery { queued, synchronous };

    // One call of the Hypervisor interface, as the call log records it.
    struct Call {
        Op op;
        std::string domain;  // empty for watch
        bool ok = true;      // false when the call returned an error
        // What happened: "acpi" or "destroyed after timeout" for shutdown, "absent" for a
        // call on an absent domain that succeeds anyway, the injected errc name, ...
        std::string note;
    };

    explicit FakeHypervisor(Delivery delivery = Delivery::queued);

    // --- Hypervisor ---------------------------------------------------------------------
    // define() runs rewrite_domain_xml() and so fails like the libvirt backend would.
    Status define(const DomainSpec& spec) override;
    Status undefine(const std::string& domain) override;
    Status start(const std::string& domain) override;  // running already: success
    Status shutdown(const std::string& domain, std::chrono::milliseconds timeout) override;
    Status destroy(const std::string& domain) override;
    Status resume(const std::string& domain) override;  // running already: success
    Result<DomainStatus> status(const std::string& domain) override;
    Status ping_guest_agent(const std::string& domain, std::chrono::milliseconds timeout) override;
    Status watch(EventHandler handler) override;

    // --- Fault injection ------------------------------------------------------------------
    // The next `count` calls of `op` (any domain) fail with `code` and do nothing else.
    void fail_next(Op op, int count, errc code);
    // A running or paused domain crashes: shutoff (crashed), event stopped/"crashed".
    void crash(const std::string& domain);
    // A running domain pauses on an I/O error: paused (ioerror), event suspended/"ioerror".
    void pause_on_io_error(const std::string& domain);
    // The next `count` resumes of this domain pause it again on an I/O error right after it
    // ran (events resumed then suspended/"ioerror"), like QEMU before its NBD client has
    // reconnected.
    void pause_again_after_resume(const std::string& domain, int count);
    // The guest ignores ACPI shutdown: shutdown() takes the timeout + destroy path.
    void set_shutdown_hangs(const std::string& domain, bool hangs);
    // The guest agent answers (default) or stays silent (ping_guest_agent -> timeout).
    void set_guest_agent_answers(const std::string& domain, bool answers);
    // The guest powers itself off: shutoff (shutdown), events shutting_down then stopped.
    void guest_powers_off(const std::string& domain);
    // Called by shutdown() with the timeout it "waits"; a simulation advances its clock here.
    void set_sleep(std::function<void(std::chrono::milliseconds)> sleep);

    // --- Inspection -----------------------------------------------------------------------
    std::vector<Call> calls() const;
    std::vector<Call> calls(Op op) const;
    void clear_calls();
    // The XML define() stored (after the NBD rewrite); nullopt when not defined.
    std::optional<std::string> defined_xml(const std::string& domain) const;
    // Queued events not yet delivered.
    std::vector<LifecycleEvent> pending_events() const;
    // Delivers every queued event to the handler on this thread; returns how many.
    std::size_t deliver_events();

private:
    struct Domain {
        std::string xml;
        DomainStatus status{DomainState::shutoff, "unknown"};
        bool persistent = true;
        bool shutdown_hangs = false;
        bool agent_answers = true;
        int pause_again = 0;
    };

    // The injected failure for op, if one is pending (consumes it). Locked.
    std::optional<Error> injected_failure(Op op, const std::string& domain);
    void emit(const std::string& domain, EventKind kind, std::string detail);  // Locked.
    void record(Op op, const std::string& domain, bool ok, std::string note);  // Locked.
    Status finish(Op op, const std::string& domain, Status result, std::string note);  // Locked.
    // Runs the synchronous deliveries collected while locked; call without the lock held.
    void flush_synchronous(std::unique_lock<std::mutex>& lock);

    const Delivery delivery_;
    mutable std::mutex mu_;
    std::map<std::string, Domain> domains_;
    std::map<Op, std::pair<int, errc>> failures_;
    std::vector<Call> calls_;
    std::vector<LifecycleEvent> queue_;
    EventHandler handler_;
    std::function<void(std::chrono::milliseconds)> sleep_;
};

std::string_view to_string(FakeHypervisor::Op op);

}  // namespace vmha::hv
