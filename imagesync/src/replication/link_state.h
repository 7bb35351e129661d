// The replication link's state machine, as a table (STYLE.md: {state, event} -> {next, action}).
//
// One link per imagesyncd process (all exports of the module travel on it). The primary dials
// the peer; the secondary listens. Narrative: a link starts `connecting` (or `standalone` when
// the operator said so); the HELLO handshake compares data generations and ends `connected`
// (in sync), `sync_source`/`sync_target` (a resync runs first) or back in `standalone` (split
// brain, unrelated data, or a configuration mismatch: never resolved silently). Losing the
// peer from any connected state returns to `connecting`; the primary then records every write
// in its persistent dirty map before replying. A finished resync makes the pair `connected`.
//
// States:
//   standalone   not connecting: refused at handshake, or disconnected by the operator
//   connecting   primary: dialing the peer with backoff; secondary: waiting to be dialed
//   connected    in sync: every write is on both copies before the client's reply
//   sync_source  this primary copies its dirty ranges to the peer; new writes also replicate
//   sync_target  this secondary receives a resync; its data is Inconsistent until it ends
#pragma once

#include <optional>
#include <string_view>

namespace imagesync::replication {

enum class LinkState { standalone, connecting, connected, sync_source, sync_target };

enum class LinkEvent {
    connect_command,     // operator: `imagesync connect` (or process start)
    disconnect_command,  // operator: `imagesync disconnect`
    handshake_in_sync,   // generations equal, nothing to copy
    handshake_source,    // this side must copy its dirty ranges to the peer
    handshake_target,    // this side must receive the peer's dirty ranges
    handshake_refused,   // split brain, unrelated data, mismatch: an operator decides
    link_lost,           // connection error, or the peer silent past the timeout
    resync_done,         // the source copied everything (source) / said so (target)
    resync_requested,    // connected primary: ranges were marked dirty (verify --mark)
    resync_announced,    // connected secondary: the primary starts a resync to it
};

std::string_view to_string(LinkState state);
std::string_view to_string(LinkEvent event);

struct LinkTransition {
    LinkState next;
    std::string_view action;  // what the replicator does on the way, for logs
};

// nullopt for an event that cannot happen in that state (a bug if it does).
std::optional<LinkTransition> link_transition(LinkState state, LinkEvent event);

// Named predicates over sets of states.
inline bool is_linked(LinkState s) {
    return s == LinkState::connected || s == LinkState::sync_source || s == LinkState::sync_target;
}
// The primary must record writes in the dirty map (the peer cannot receive them).
inline bool writes_go_dirty(LinkState s) { return !is_linked(s); }

}  // namespace imagesync::replication
