// The libvirt backend of the Hypervisor boundary.
#pragma once

#include <memory>
#include <string>

#include <vmha/error.h>
#include <vmha/hypervisor/hypervisor.h>

namespace vmha::hv {

// Connects to libvirt at `uri` ("qemu:///system", "test:///default",
// "qemu:///system?socket=/path/libvirt-sock", ...). Fails with connection_lost, quoting
// libvirt, when the first connection cannot be opened.
//
// The backend is thread-safe. It keeps one connection and reopens it on the next call after
// libvirtd went away (close callback, keepalive 5 s x 3). Lifecycle events come from a libvirt
// event loop thread shared by every backend of the process (started by the first, stopped with
// the last); watch() re-subscribes after a reconnect, but events that happened while the
// connection was down are lost: poll status() after an error. libvirt's own error printing is
// switched off; its messages are quoted in the returned errors.
Result<std::unique_ptr<Hypervisor>> make_libvirt_hypervisor(std::string uri);

}  // namespace vmha::hv
