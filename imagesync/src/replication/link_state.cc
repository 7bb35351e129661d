#include "replication/link_state.h"

#include <array>

namespace imagesync::replication {

std::string_view to_string(LinkState state) {
    switch (state) {
        case LinkState::standalone: return "standalone";
        case LinkState::connecting: return "connecting";
        case LinkState::connected: return "connected";
        case LinkState::sync_source: return "sync_source";
        case LinkState::sync_target: return "sync_target";
    }
    return "unknown";
}

std::string_view to_string(LinkEvent event) {
    switch (event) {
        case LinkEvent::connect_command: return "connect_command";
        case LinkEvent::disconnect_command: return "disconnect_command";
        case LinkEvent::handshake_in_sync: return "handshake_in_sync";
        case LinkEvent::handshake_source: return "handshake_source";
        case LinkEvent::handshake_target: return "handshake_target";
        case LinkEvent::handshake_refused: return "handshake_refused";
        case LinkEvent::link_lost: return "link_lost";
        case LinkEvent::resync_done: return "resync_done";
        case LinkEvent::resync_requested: return "resync_requested";
        case LinkEvent::resync_announced: return "resync_announced";
    }
    return "unknown";
}

namespace {

struct Row {
    LinkState state;
    LinkEvent event;
    LinkState next;
    std::string_view action;
};

using S = LinkState;
using E = LinkEvent;

// Every valid {state, event}; anything else is a bug.
constexpr std::array rows = {
    Row{S::standalone, E::connect_command, S::connecting, "start dialing (primary) or listening (secondary)"},
    Row{S::standalone, E::disconnect_command, S::standalone, "nothing: already standalone"},
    Row{S::connecting, E::connect_command, S::connecting, "nothing: already connecting"},
    Row{S::connecting, E::disconnect_command, S::standalone, "stop dialing or listening"},
    Row{S::connecting, E::handshake_in_sync, S::connected, "replicate every write synchronously"},
    Row{S::connecting, E::handshake_source, S::sync_source, "copy the dirty ranges to the peer"},
    Row{S::connecting, E::handshake_target, S::sync_target, "mark the data Inconsistent, then receive"},
    Row{S::connecting, E::handshake_refused, S::standalone, "close; report; wait for the operator"},
    Row{S::connecting, E::link_lost, S::connecting, "retry with backoff"},
    Row{S::connected, E::connect_command, S::connected, "nothing: already connected"},
    Row{S::connected, E::disconnect_command, S::standalone, "close; primary records writes as dirty"},
    Row{S::connected, E::link_lost, S::connecting, "primary: new generation, in-flight writes recorded dirty"},
    Row{S::connected, E::resync_requested, S::sync_source, "tell the peer, then copy the ranges marked dirty"},
    Row{S::connected, E::resync_announced, S::sync_target, "mark the data Inconsistent, then receive"},
    Row{S::sync_source, E::connect_command, S::sync_source, "nothing: already resyncing"},
    Row{S::sync_source, E::disconnect_command, S::standalone, "close; the resync resumes on reconnect"},
    Row{S::sync_source, E::link_lost, S::connecting, "in-flight writes recorded dirty; the resync resumes on reconnect"},
    Row{S::sync_source, E::resync_done, S::connected, "tell the peer it is UpToDate"},
    Row{S::sync_target, E::connect_command, S::sync_target, "nothing: already resyncing"},
    Row{S::sync_target, E::disconnect_command, S::standalone, "close; stay Inconsistent"},
    Row{S::sync_target, E::link_lost, S::connecting, "stay Inconsistent until a resync completes"},
    Row{S::sync_target, E::resync_done, S::connected, "adopt the source's generation; UpToDate"},
};

}  // namespace

std::optional<LinkTransition> link_transition(LinkState state, LinkEvent event) {
    for (const Row& row : rows) {
        if (row.state == state && row.event == event) return LinkTransition{row.next, row.action};
    }
    return std::nullopt;
}

}  // namespace imagesync::replication
