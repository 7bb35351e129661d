// Module leases: who may run a module's VM when the two nodes cannot see each other.
//
// A lease names one holder node per (pair, module) at a time and is granted by an arbiter
// outside the pair: the vmha-witness daemon (backend "vmha") or an etcd cluster (backend
// "etcd"). Both sit behind one interface, LeaseBackend. The arbiter alone decides who holds
// a lease, on its own clock: it grants a lease to a contender only after the previous
// holder's lease has expired there, and every change of hands raises the lease's epoch (a
// fencing token).
//
// The holder cannot read the arbiter's clock, so it keeps its own, pessimistic view of the
// lease: LeaseView (pure, driven by monotonic timestamps) says until when this node is
// *certainly* still the holder. The rules and a worked timeline are in docs/witness.md:
//   - the holder takes as start of a grant or renewal the moment it SENT the request
//     (t_sent), never when the reply came;
//   - it considers the lease lost at t_sent + remaining * (1 - drift) - margin, where
//     `remaining` is the arbiter's own count of the lease's life at reply time (the TTL for
//     a fresh grant or a renewal), `drift` bounds how much slower the holder's clock may run
//     than the arbiter's, and `margin` covers stopping the VM and fencing the disks;
//   - the arbiter holds the lease until t_received + ttl on its clock, and t_received is
//     after t_sent, so the holder always gives up first.
//
// Threading: a backend runs on the executor passed at its creation; every completion is
// delivered there, never inline from inside the call that started the work (as the module
// runner's ports do). Calls may overlap; each completes exactly once, with a deadline,
// except that no completion is delivered after stop() or the backend's destruction.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/any_io_executor.hpp>

#include <vmha/error.h>

namespace vmha::lease {

using Duration = std::chrono::milliseconds;
using TimePoint = std::chrono::steady_clock::time_point;

// Which lease: the pair of nodes (see pair_name) and the module.
struct LeaseKey {
    std::string pair;    // "hv1+hv2": the module's two node names, sorted, joined by '+'
    std::string module;  // the module name
    bool operator==(const LeaseKey&) const = default;
};

// "hv1+hv2" for nodes hv1 and hv2, in either order. One arbiter serves many pairs.
std::string pair_name(std::string_view node_a, std::string_view node_b);

// What the arbiter said about a lease, at the moment it answered.
struct LeaseState {
    std::string holder;       // the node holding it; empty when free
    Duration remaining{0};    // its life left, measured by the ARBITER's clock; 0 when free
    Duration ttl{0};          // the TTL it was granted (or renewed) with
    std::uint64_t epoch = 0;  // fencing token: grows every time the lease is granted anew
                              // (to another node, or after it expired or was released);
                              // a renewal keeps it. 0: never granted.
    // How coarse `remaining` is: 0 for vmha-witness (milliseconds); 1 s for etcd, which counts
    // whole seconds and may still name the holder for a while after the lease ran out. A reader
    // that infers when the holder last renewed must allow this much.
    Duration resolution{0};
    bool held_by(std::string_view node) const { return !holder.empty() && holder == node; }
};

// The arbiter of one node. Implementations: make_witness_backend, make_etcd_backend.
class LeaseBackend {
  public:
    using Done = std::function<void(Result<LeaseState>)>;
    using DoneStatus = std::function<void(Status)>;
    virtual ~LeaseBackend() = default;

    // Takes the lease for `holder` if it is free or expired (or renews it if `holder` holds
    // it already). Answers the lease's state after the attempt: held_by(holder) tells
    // whether it was granted; otherwise `holder` and `remaining` name who has it and for
    // how long at most. Errors are only failures to ask (unreachable, refused, timeout).
    virtual void acquire(const LeaseKey& key, const std::string& holder, Duration ttl,
                         Done done) = 0;
    // Extends a lease `holder` holds, for `ttl` from the arbiter's receipt. The answer's
    // held_by(holder) is false when it was lost meanwhile (expired and taken, or released).
    virtual void renew(const LeaseKey& key, const std::string& holder, Duration ttl, Done done) = 0;
    // Gives the lease up when `holder` holds it (no-op otherwise).
    virtual void release(const LeaseKey& key, const std::string& holder, DoneStatus done) = 0;
    // The lease's state, unchanged.
    virtual void query(const LeaseKey& key, Done done) = 0;
    // Drops pending calls (their completions never run) and closes connections; later calls
    // never complete either. For shutdown: the caller forgets its leases with them.
    virtual void stop() = 0;
};

// The node's TLS files (the node file's `tls`), presented to the witness.
struct TlsFiles {
    std::string ca;
    std::string cert;
    std::string key;
};

struct WitnessBackendOptions {
    std::string host;  // the witness's address or name
    std::uint16_t port = 7950;
    std::string node;  // this node; its certificate must name it
    TlsFiles tls;
    std::string witness_name;        // the name the witness's certificate must carry; empty = any
                                     // name, as long as the CA signed it
    Duration connect_timeout{3000};  // TCP connect + TLS handshake + HELLO
    Duration request_timeout{2000};  // one request's answer
};

// Client of a vmha-witness over mutual TLS. Checks the TLS files at creation (readable, key
// matches certificate, certificate signed by the CA and naming `node`).
Result<std::unique_ptr<LeaseBackend>> make_witness_backend(boost::asio::any_io_executor executor,
                                                           WitnessBackendOptions options);

struct EtcdBackendOptions {
    std::vector<std::pair<std::string, std::uint16_t>> endpoints;  // host, port (client URL, http)
    std::string prefix = "/vmha/leases/";  // keys are PREFIX + pair + "/" + module
    Duration request_timeout{2000};        // per HTTP request; the next endpoint is tried after
};

// Leases held in etcd through its v3 HTTP/JSON gateway (/v3/lease/grant, /v3/kv/txn,
// /v3/lease/keepalive, /v3/lease/revoke, /v3/lease/timetolive, /v3/kv/range). etcd counts
// TTLs in whole seconds: a TTL is rounded up to the next second.
Result<std::unique_ptr<LeaseBackend>> make_etcd_backend(boost::asio::any_io_executor executor,
                                                        EtcdBackendOptions options);

// ---------------------------------------------------------------------------------------
// The holder's own view of a lease (pure; no clock of its own: every call says what time it
// is on the node's monotonic clock).

struct LeaseTiming {
    // Bound on clock-rate difference: while the arbiter's clock advances by T, the holder's
    // advances by at least T * (1 - drift). Monotonic clocks of healthy machines differ by
    // far less than 1e-3; the default leaves a wide berth.
    double drift = 0.01;
    // Time the holder needs to stop writing once it decides to: pause the VM, make
    // imagesyncd refuse writes. The lease is treated as lost this long before its
    // pessimistic end.
    Duration margin{1000};
};

class LeaseView {
  public:
    explicit LeaseView(std::string self, LeaseTiming timing = {});

    // A reply to an acquire or renew this node sent at `sent`. When the reply names this
    // node as holder, the lease is certain until sent + remaining*(1-drift) - margin (a later
    // deadline than the current one only extends it). Otherwise the lease is lost at once.
    // A changed epoch while held means the lease was lost in between: the view records it.
    void on_reply(TimePoint sent, const LeaseState& reply);
    // The lease was given up or is known lost (release sent, renew failed with a definite
    // answer naming another holder).
    void drop();

    // True while this node is certainly the holder at `now`.
    bool holds(TimePoint now) const;
    // The moment the certainty ends (nullopt when not held at all).
    std::optional<TimePoint> certain_until() const { return until_; }
    // Time left at `now` (zero when not held).
    Duration left(TimePoint now) const;
    // How often to renew a lease of `ttl`: a third of its certain period, so that two
    // renewals in a row may fail before the certainty ends.
    static Duration renew_interval(Duration ttl, LeaseTiming timing);
    // The epoch of the current holding (0 when not held).
    std::uint64_t epoch() const { return until_ ? epoch_ : 0; }
    // Epochs this view saw change while held: a lease lost and regained in between.
    std::uint64_t losses() const { return losses_; }
    const LeaseTiming& timing() const { return timing_; }

  private:
    std::string self_;
    LeaseTiming timing_;
    std::optional<TimePoint> until_;
    std::uint64_t epoch_ = 0;
    std::uint64_t losses_ = 0;
};

// The holder's certain end of a lease answered with `remaining` for a request sent at
// `sent`: sent + remaining * (1 - drift) - margin (never before `sent`).
TimePoint certain_end(TimePoint sent, Duration remaining, const LeaseTiming& timing);

// Checks a timing: 0 <= drift < 0.5, margin >= 0, and that a lease of `ttl` leaves a
// positive certain period (ttl * (1 - drift) > margin). Whole-sentence error otherwise.
Status check_timing(Duration ttl, const LeaseTiming& timing);

}  // namespace vmha::lease
