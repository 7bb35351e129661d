// A mirror module's state on one node (SPEC §4), the data state beside it, and the named
// predicates the rest of vmhad uses instead of comparing states one by one.
//
//   STOP    grey    stopped by the operator; imagesyncd not serving
//   WAIT    red     started, but may not run the VM (peer unknown, data not UpToDate, a checker
//                   says this node is unfit, split brain); imagesyncd serves as a secondary
//   ALONE   green   runs the VM, the peer does not receive its writes (they are tracked dirty)
//   PRIM    green   runs the VM, the peer is SECOND and receives every write synchronously
//   SECOND  orange  receives the peer's writes; eligible to take over once UpToDate
//
// Every state is shown with a reason: "WAIT: peer hv2 not seen since start".
// Threading: plain values and pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace vmha::module {

enum class State : std::uint8_t { stop, wait, alone, prim, second };
inline constexpr State kAllStates[] = {State::stop, State::wait, State::alone, State::prim,
                                       State::second};
std::string_view to_string(State state);  // "STOP", "WAIT", ...
std::optional<State> parse_state(std::string_view text);

// The node runs (or is bringing up) the VM in these states, and only in these.
constexpr bool runs_vm(State s) { return s == State::alone || s == State::prim; }
// The load-balancer health check answers OK in these states.
constexpr bool serves_clients(State s) { return runs_vm(s); }
// imagesyncd is expected to be serving (every state but STOP).
constexpr bool needs_imagesync(State s) { return s != State::stop; }

// The data state of this node's copy (imagesync's, SPEC §4).
enum class DataState : std::uint8_t { unknown, up_to_date, inconsistent, outdated };
std::string_view to_string(DataState state);  // "UpToDate", "Inconsistent", ...
std::optional<DataState> parse_data_state(std::string_view text);

// Only an UpToDate copy may ever start the VM: the one predicate every path goes through.
constexpr bool may_start_vm_on(DataState d) { return d == DataState::up_to_date; }

// Whether the peer's vmhad is heard (heartbeats on any path within the timeout).
enum class Liveness : std::uint8_t {
    unknown,  // not heard since this vmhad started, or no heartbeat could be verified yet
    alive,
    lost,     // every path silent for the heartbeat timeout, after having been heard
};
std::string_view to_string(Liveness liveness);

// imagesyncd's replication link, folded to what the module needs.
enum class Link : std::uint8_t {
    down,         // standalone: not connected (or not yet)
    connected,    // in sync: every write reaches both copies
    sync_source,  // connected, resync running from here to the peer
    sync_target,  // connected, resync running from the peer to here
    split_brain,  // the handshake found that both sides wrote alone: refused
    refused,      // the handshake refused for another reason (unrelated data, no usable source)
};
std::string_view to_string(Link link);
// The peer receives this node's writes (PRIM rather than ALONE).
constexpr bool peer_receives_writes(Link l) { return l == Link::connected || l == Link::sync_source; }

}  // namespace vmha::module
