// The one translation from libvirt errors (and state/event codes) to vmha's vocabulary.
#pragma once

#include <string>
#include <string_view>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <vmha/error.h>
#include <vmha/hypervisor/hypervisor.h>

namespace vmha::hv::detail {

// The errc for a libvirt error number (virErrorNumber).
errc errc_from_libvirt(int code) noexcept;

// The error libvirt recorded for this thread's last failed call, as a whole sentence:
//   domain "web1": cannot start: libvirt: "Requested operation is not valid: ..."
// `who_what` is the part before "libvirt:". Resets libvirt's per-thread error.
Error last_libvirt_error(std::string_view who_what);
// libvirt's per-thread last error number (VIR_ERR_OK when none).
int last_libvirt_code() noexcept;

// virDomainState + reason -> DomainStatus with libvirt's reason name ("ioerror", "destroyed"...).
DomainStatus status_from_libvirt(int state, int reason);
// virDomainEventType + detail -> EventKind with the detail's name.
LifecycleEvent event_from_libvirt(std::string domain, int event, int detail);

}  // namespace vmha::hv::detail
