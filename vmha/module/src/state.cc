#include <vmha/module/state.h>

namespace vmha::module {

std::string_view to_string(State state) {
    switch (state) {
        case State::stop: return "STOP";
        case State::wait: return "WAIT";
        case State::alone: return "ALONE";
        case State::prim: return "PRIM";
        case State::second: return "SECOND";
    }
    return "?";
}

std::optional<State> parse_state(std::string_view text) {
    for (State s : kAllStates) {
        if (to_string(s) == text) return s;
    }
    return std::nullopt;
}

std::string_view to_string(DataState state) {
    switch (state) {
        case DataState::unknown: return "Unknown";
        case DataState::up_to_date: return "UpToDate";
        case DataState::inconsistent: return "Inconsistent";
        case DataState::outdated: return "Outdated";
    }
    return "?";
}

std::optional<DataState> parse_data_state(std::string_view text) {
    for (DataState d : {DataState::unknown, DataState::up_to_date, DataState::inconsistent,
                        DataState::outdated}) {
        if (to_string(d) == text) return d;
    }
    return std::nullopt;
}

std::string_view to_string(Liveness liveness) {
    switch (liveness) {
        case Liveness::unknown: return "unknown";
        case Liveness::alive: return "alive";
        case Liveness::lost: return "lost";
    }
    return "?";
}

std::string_view to_string(Link link) {
    switch (link) {
        case Link::down: return "down";
        case Link::connected: return "connected";
        case Link::sync_source: return "sync_source";
        case Link::sync_target: return "sync_target";
        case Link::split_brain: return "split_brain";
        case Link::refused: return "refused";
    }
    return "?";
}

}  // namespace vmha::module
