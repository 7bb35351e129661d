// The module runner's boundaries. vmhad implements them over Boost.Asio, imagesyncd's control
// socket, the Hypervisor backend and the peer channel; the deterministic simulation
// (tests/sim) implements them over a virtual clock and simulated nodes. Every completion is
// delivered on the runner's executor (the daemon loop, or the simulation's single thread),
// never inline from inside the call that started the work.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include <vmha/error.h>
#include <vmha/lease/lease.h>

#include "meta/generations.h"  // imagesync's generation records and decide()
#include <vmha/module/state.h>

namespace vmha::module {

using Duration = std::chrono::milliseconds;
using TimePoint = std::chrono::steady_clock::time_point;
using Done = std::function<void(Status)>;

class Clock {
public:
    virtual ~Clock() = default;
    virtual TimePoint now() const = 0;
    // Calls `fn` once after `delay` (on the runner's executor). Cancelled by the token's
    // destruction: a destroyed token's callback never runs.
    class Token {
    public:
        virtual ~Token() = default;
    };
    virtual std::unique_ptr<Token> after(Duration delay, std::function<void()> fn) = 0;
};

// What the runner reads of imagesyncd (`imagesync status`, folded).
struct ImagesyncStatus {
    bool up = false;  // the control socket answers
    bool primary = false;
    DataState data = DataState::unknown;
    Link link = Link::down;
    std::uint64_t dirty_bytes = 0;
    std::uint64_t resync_done = 0;   // bytes
    std::uint64_t resync_total = 0;  // bytes; 0 = no resync running
    imagesync::meta::Generations generations;
    bool crashed_primary = false;
    bool fencing = false;  // primary that lost its peer: write replies wait for resume_io()
    std::uint64_t instance = 0;  // which imagesyncd process answered (its pid); 0 = unknown
    // imagesync's split-brain report (peer_node, local_changed_bytes, peer_changed_bytes,
    // since_generation, kept_here) while a split brain is unresolved; null otherwise.
    nlohmann::json split_brain;
};

class ImagesyncPort {
public:
    virtual ~ImagesyncPort() = default;
    // Runs imagesyncd (spawned, or re-attached) / stops it (`vmha stop` only).
    virtual void ensure_running(Done done) = 0;
    virtual void stop(Done done) = 0;
    virtual void status(std::function<void(ImagesyncStatus)> done) = 0;
    virtual void promote(Done done) = 0;  // refuses unless UpToDate
    // `vmha prim --force`: promotes Inconsistent or Outdated data (imagesync's forced promotion;
    // the peer's newer writes are discarded at the next resync). Ports that cannot refuse.
    virtual void promote_forced(Done done) {
        done(Error(errc::unsupported, "a forced promotion is not supported here"));
    }
    virtual void demote(Done done) = 0;   // drains, flushes, then refuses writes
    virtual void connect(Done done) = 0;
    virtual void outdate(Done done) = 0;  // the peer wrote without us: mark Outdated
    // A new pair, where neither copy ever held data: this node's images become the data
    // (imagesync's forced promotion of a JustCreated copy, then a demotion).
    virtual void declare_initial_data(Done done) = 0;
    // Fencing done (the peer's copy is Outdated, or the peer is gone): the held write replies go.
    virtual void resume_io(Done done) = 0;
    // With a witness: imagesyncd accepts writes for at most `valid_for` from now (its own
    // monotonic clock) unless extended by a later call, so that a node whose vmhad died cannot
    // write past its lease. Ports whose imagesyncd has no such deadline answer unsupported;
    // the runner then relies on its own self-fence alone (docs/witness.md).
    // A self-fenced node: imagesyncd (secondary, not connected) discards the writes it made
    // without the peer if none was ever acknowledged, becoming a full resync target instead of
    // a split-brain side; refused, with the reason, otherwise.
    virtual void discard_unacknowledged(Done done) {
        done(Error(errc::unsupported, "imagesyncd cannot discard unacknowledged writes"));
    }
    virtual void write_lease(Duration valid_for, Done done) {
        (void)valid_for;
        done(Error(errc::unsupported, "imagesyncd has no write deadline"));
    }
};

// The VM as the runner sees it (the Hypervisor backend plus the domain definition).
enum class VmHealth : std::uint8_t {
    running,
    stopped,            // shut off, crashed, absent: it should be (re)started where it runs
    paused_on_io_error, // the disks went away (imagesyncd restarting): resume, never restart
    unknown,            // the hypervisor could not be asked
};

class VmPort {
public:
    virtual ~VmPort() = default;
    virtual void start(Done done) = 0;  // defines the domain (NBD disks) and starts it
    virtual void stop(Done done) = 0;   // graceful shutdown, destroy after the timeout
    virtual void power_off(Done done) = 0;  // destroy at once: a self-fence (rule 65) waits for no guest
    virtual void resume(Done done) = 0; // after an I/O-error pause, once the disks are back
    virtual void health(std::function<void(VmHealth, std::string reason)> done) = 0;
};

// The peer's vmhad: the runner sends its reports; it receives the peer's through the runner's
// on_peer_* calls.
class PeerPort {
public:
    virtual ~PeerPort() = default;
    virtual void send(const nlohmann::json& message) = 0;  // dropped while the channel is down
};

// The module's lease at the witness (a module with a `witness` section; docs/witness.md). vmhad
// implements it over a lease::LeaseBackend with the module's LeaseKey and this node's name; the
// simulation over a simulated witness. Each call completes exactly once, with a deadline.
class LeasePort {
public:
    virtual ~LeasePort() = default;
    // Takes the lease for this node, or renews it when this node holds it: the arbiter's answer.
    virtual void acquire(Duration ttl, std::function<void(Result<lease::LeaseState>)> done) = 0;
    // Gives it up (no-op unless this node holds it).
    virtual void release(Done done) = 0;
};

// The fencing hook (the module's `fencing` section): makes sure the silent peer no longer runs
// the VM (IPMI, a cloud provider's API...); ok = the peer is fenced. Completes exactly once.
class FencePort {
public:
    virtual ~FencePort() = default;
    virtual void fence_peer(Done done) = 0;
};

// The module's durable state in the node's state_dir.
struct Persisted {
    bool started = false;
    bool may_start_alone = false;
    State last_state = State::stop;
    bool failover = true;  // `vmha failover on|off`
    // imagesync's data state and generations as last read: reported to the peer while
    // imagesyncd is not running (module stopped), so that the peer can still tell whose copy
    // is newer.
    DataState data = DataState::unknown;
    imagesync::meta::Generations generations;
    bool crashed_primary = false;
    // The above were read from imagesyncd just before vmhad stopped it cleanly: they are its
    // copy's state until it runs again. Otherwise (it crashed, the machine went down) they may
    // lag behind its metadata by a poll or more, and are not reported to the peer.
    bool final = false;
    bool fencing = false;  // primary that lost its peer: write replies wait for resume_io()
    std::uint64_t instance = 0;  // which imagesyncd process answered (its pid); 0 = unknown
};

class Store {
public:
    virtual ~Store() = default;
    virtual Persisted load() = 0;
    virtual Status save(const Persisted& state) = 0;
};

}  // namespace vmha::module
