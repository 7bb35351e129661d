// libvirt error numbers, domain states and lifecycle events in vmha's words.
#include "libvirt_error.h"

#include <array>
#include <span>

#include <fmt/format.h>

namespace vmha::hv::detail {

errc errc_from_libvirt(int code) noexcept {
    switch (code) {
        case VIR_ERR_NO_DOMAIN:
        case VIR_ERR_NO_DOMAIN_SNAPSHOT:
        case VIR_ERR_NO_STORAGE_VOL:
        case VIR_ERR_NO_NETWORK:
            return errc::not_found;
        case VIR_ERR_DOM_EXIST:
            return errc::already_exists;
        case VIR_ERR_INVALID_ARG:
        case VIR_ERR_XML_ERROR:
        case VIR_ERR_XML_DETAIL:
        case VIR_ERR_XML_INVALID_SCHEMA:
        case VIR_ERR_CONFIG_UNSUPPORTED:
            return errc::invalid_argument;
        case VIR_ERR_NO_SUPPORT:
        case VIR_ERR_ARGUMENT_UNSUPPORTED:
        case VIR_ERR_OPERATION_UNSUPPORTED:
            return errc::unsupported;
        case VIR_ERR_AUTH_FAILED:
        case VIR_ERR_AUTH_CANCELLED:
        case VIR_ERR_AUTH_UNAVAILABLE:
        case VIR_ERR_OPERATION_DENIED:
        case VIR_ERR_ACCESS_DENIED:
            return errc::permission_denied;
        case VIR_ERR_OPERATION_TIMEOUT:
        case VIR_ERR_AGENT_UNRESPONSIVE:
        case VIR_ERR_AGENT_UNSYNCED:
            return errc::timeout;
        case VIR_ERR_NO_CONNECT:
        case VIR_ERR_RPC:
        case VIR_ERR_INVALID_CONN:
            return errc::connection_lost;
        case VIR_ERR_SYSTEM_ERROR:  // libvirt uses it for failed socket connects and much else
        default:
            return errc::hypervisor_error;
    }
}

int last_libvirt_code() noexcept {
    const virError* e = virGetLastError();
    return e != nullptr ? e->code : VIR_ERR_OK;
}

Error last_libvirt_error(std::string_view who_what) {
    const virError* e = virGetLastError();
    if (e == nullptr || e->code == VIR_ERR_OK) {
        return Error(errc::hypervisor_error,
                     fmt::format("{}: libvirt reported a failure without a message", who_what));
    }
    std::string message = e->message != nullptr ? e->message : "no message";
    Error error(errc_from_libvirt(e->code), fmt::format("{}: libvirt: \"{}\"", who_what, message));
    virResetLastError();
    return error;
}

namespace {

std::string name_of(std::span<const std::string_view> names, int value) {
    if (value >= 0 && static_cast<std::size_t>(value) < names.size()) {
        return std::string(names[static_cast<std::size_t>(value)]);
    }
    return fmt::format("unknown-{}", value);
}

// Indexed by virDomain*Reason / virDomainEvent*DetailType (libvirt 9.0, libvirt-domain.h).
constexpr auto running_reasons = std::to_array<std::string_view>({
    "unknown", "booted", "migrated", "restored", "from_snapshot", "unpaused",
    "migration_canceled", "save_canceled", "wakeup", "crashed", "postcopy", "postcopy_failed"});
constexpr auto paused_reasons = std::to_array<std::string_view>({
    "unknown", "user", "migration", "save", "dump", "ioerror", "watchdog", "from_snapshot",
    "shutting_down", "snapshot", "crashed", "starting_up", "postcopy", "postcopy_failed",
    "api_error"});
constexpr auto shutdown_reasons = std::to_array<std::string_view>({"unknown", "user"});
constexpr auto shutoff_reasons = std::to_array<std::string_view>({
    "unknown", "shutdown", "destroyed", "crashed", "migrated", "saved", "failed",
    "from_snapshot", "daemon"});
constexpr auto crashed_reasons = std::to_array<std::string_view>({"unknown", "panicked"});

constexpr auto defined_details = std::to_array<std::string_view>({"added", "updated", "renamed",
                                                         "from_snapshot"});
constexpr auto undefined_details = std::to_array<std::string_view>({"removed", "renamed"});
constexpr auto started_details = std::to_array<std::string_view>({"booted", "migrated", "restored",
                                                         "from_snapshot", "wakeup"});
constexpr auto suspended_details = std::to_array<std::string_view>({
    "paused", "migrated", "ioerror", "watchdog", "restored", "from_snapshot", "api_error",
    "postcopy", "postcopy_failed"});
constexpr auto resumed_details = std::to_array<std::string_view>({"unpaused", "migrated",
                                                         "from_snapshot", "postcopy",
                                                         "postcopy_failed"});
constexpr auto stopped_details = std::to_array<std::string_view>({
    "shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from_snapshot"});
constexpr auto shutdown_details = std::to_array<std::string_view>({"finished", "guest", "host"});
constexpr auto pmsuspended_details = std::to_array<std::string_view>({"memory", "disk"});
constexpr auto crashed_details = std::to_array<std::string_view>({"panicked", "crashloaded"});

}  // namespace

DomainStatus status_from_libvirt(int state, int reason) {
    switch (state) {
        case VIR_DOMAIN_RUNNING: return {DomainState::running, name_of(running_reasons, reason)};
        case VIR_DOMAIN_PAUSED: return {DomainState::paused, name_of(paused_reasons, reason)};
        case VIR_DOMAIN_SHUTDOWN: return {DomainState::shutting_down, name_of(shutdown_reasons, reason)};
        case VIR_DOMAIN_SHUTOFF: return {DomainState::shutoff, name_of(shutoff_reasons, reason)};
        case VIR_DOMAIN_CRASHED: return {DomainState::crashed, name_of(crashed_reasons, reason)};
        case VIR_DOMAIN_BLOCKED: return {DomainState::other, "blocked"};
        case VIR_DOMAIN_PMSUSPENDED: return {DomainState::other, "pmsuspended"};
        default: return {DomainState::other, "unknown"};
    }
}

LifecycleEvent event_from_libvirt(std::string domain, int event, int detail) {
    LifecycleEvent e{std::move(domain), EventKind::other, {}};
    switch (event) {
        case VIR_DOMAIN_EVENT_DEFINED: e.kind = EventKind::defined; e.detail = name_of(defined_details, detail); break;
        case VIR_DOMAIN_EVENT_UNDEFINED: e.kind = EventKind::undefined; e.detail = name_of(undefined_details, detail); break;
        case VIR_DOMAIN_EVENT_STARTED: e.kind = EventKind::started; e.detail = name_of(started_details, detail); break;
        case VIR_DOMAIN_EVENT_SUSPENDED: e.kind = EventKind::suspended; e.detail = name_of(suspended_details, detail); break;
        case VIR_DOMAIN_EVENT_RESUMED: e.kind = EventKind::resumed; e.detail = name_of(resumed_details, detail); break;
        case VIR_DOMAIN_EVENT_STOPPED: e.kind = EventKind::stopped; e.detail = name_of(stopped_details, detail); break;
        case VIR_DOMAIN_EVENT_SHUTDOWN: e.kind = EventKind::shutting_down; e.detail = name_of(shutdown_details, detail); break;
        case VIR_DOMAIN_EVENT_PMSUSPENDED: e.kind = EventKind::other; e.detail = "pmsuspended-" + name_of(pmsuspended_details, detail); break;
        case VIR_DOMAIN_EVENT_CRASHED: e.kind = EventKind::crashed; e.detail = name_of(crashed_details, detail); break;
        default: e.detail = fmt::format("event-{}-{}", event, detail); break;
    }
    return e;
}

}  // namespace vmha::hv::detail
