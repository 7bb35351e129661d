// Names of the Hypervisor boundary's enums, for logs and --json output.
#include <vmha/hypervisor/hypervisor.h>

namespace vmha::hv {

std::string_view to_string(DomainState state) {
    switch (state) {
        case DomainState::absent: return "absent";
        case DomainState::running: return "running";
        case DomainState::paused: return "paused";
        case DomainState::shutting_down: return "shutting_down";
        case DomainState::shutoff: return "shutoff";
        case DomainState::crashed: return "crashed";
        case DomainState::other: return "other";
    }
    internal_error("unknown DomainState");
}

std::string_view to_string(EventKind kind) {
    switch (kind) {
        case EventKind::defined: return "defined";
        case EventKind::undefined: return "undefined";
        case EventKind::started: return "started";
        case EventKind::suspended: return "suspended";
        case EventKind::resumed: return "resumed";
        case EventKind::stopped: return "stopped";
        case EventKind::crashed: return "crashed";
        case EventKind::shutting_down: return "shutting_down";
        case EventKind::other: return "other";
    }
    internal_error("unknown EventKind");
}

}  // namespace vmha::hv
