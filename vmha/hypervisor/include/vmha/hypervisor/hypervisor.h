// The hypervisor boundary: what vmhad and the vm checker need of a hypervisor, nothing more.
//
// Backends: libvirt (make_libvirt_hypervisor, libvirt.h), the Hyper-V bridge (later), and an
// in-memory fake with fault injection for unit tests and the simulation (fake.h).
//
// Every call is blocking and thread-safe: vmhad calls them from worker threads, never from
// its event loop. Errors come back as vmha errors (vmha::errc) with a whole sentence that
// quotes the domain and what the hypervisor said; a backend never prints anything itself.
// Lifecycle events are delivered on a backend thread to the handler given to watch(); the
// receiver posts them to its own executor.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <vmha/config/config.h>
#include <vmha/error.h>

namespace vmha::hv {

// What a domain is doing (libvirt's virDomainState, folded).
enum class DomainState {
    absent,         // no such domain defined on this hypervisor
    running,
    paused,         // see DomainStatus::reason: "ioerror" is the one vmha repairs by itself
    shutting_down,  // an ACPI shutdown is in progress
    shutoff,        // defined, not running; reason says why ("crashed", "destroyed", "shutdown")
    crashed,        // the hypervisor reports a crash and keeps the domain around
    other,          // blocked, pmsuspended, unknown
};
std::string_view to_string(DomainState state);

struct DomainStatus {
    DomainState state = DomainState::absent;
    // The hypervisor's reason for the state, in libvirt's words ("booted", "ioerror",
    // "destroyed", "crashed", "shutdown", "user", "unknown", ...).
    std::string reason;

    bool runs() const { return state == DomainState::running; }
    bool paused_on_io_error() const { return state == DomainState::paused && reason == "ioerror"; }
    // Holds guest memory: running, paused, shutting down (must be stopped before the peer runs it).
    bool active() const {
        return state == DomainState::running || state == DomainState::paused ||
               state == DomainState::shutting_down || state == DomainState::other;
    }
};

// Something happened to a domain (libvirt's lifecycle events, folded).
enum class EventKind {
    defined,
    undefined,
    started,
    suspended,   // detail "ioerror" when an I/O error paused it
    resumed,
    stopped,     // detail: "shutdown", "destroyed", "crashed", "failed", "migrated", ...
    crashed,
    shutting_down,
    other,
};
std::string_view to_string(EventKind kind);

struct LifecycleEvent {
    std::string domain;
    EventKind kind = EventKind::other;
    std::string detail;
};

// One disk of the module's domain served by imagesyncd instead of the image file.
struct NbdDisk {
    std::string image_path;   // the <source file='...'/> in the module's domain XML
    std::string target;       // the guest device ("vda"); empty = matched by image_path
    std::string nbd_socket;   // imagesyncd's NBD unix socket on this node
    std::string export_name;  // the NBD export serving image_path
    config::DiskFormat format = config::DiskFormat::raw;  // kept: QEMU runs qcow2 over NBD
};

// What define() puts on the hypervisor: the module's domain XML with each replicated disk
// rewritten into an NBD disk (error_policy/rerror_policy 'stop'), autostart off.
struct DomainSpec {
    std::string name;        // must equal the <name> in xml
    std::string xml;         // the module's domain definition, as the operator wrote it
    std::vector<NbdDisk> disks;
};

class Hypervisor {
public:
    using EventHandler = std::function<void(const LifecycleEvent&)>;

    virtual ~Hypervisor() = default;

    // Defines (or redefines) the domain persistently from spec; disables autostart.
    // Refuses (invalid_argument) a spec whose XML lacks one of the replicated disks.
    virtual Status define(const DomainSpec& spec) = 0;
    // Removes the persistent definition; a running domain is left running. Absent is success.
    virtual Status undefine(const std::string& domain) = 0;
    virtual Status start(const std::string& domain) = 0;
    // ACPI shutdown, then waits up to `timeout` for shutoff, then destroys. Absent or already
    // shut off is success.
    virtual Status shutdown(const std::string& domain, std::chrono::milliseconds timeout) = 0;
    // Immediate power-off. Absent or already shut off is success.
    virtual Status destroy(const std::string& domain) = 0;
    virtual Status resume(const std::string& domain) = 0;
    virtual Result<DomainStatus> status(const std::string& domain) = 0;
    // QEMU guest agent round trip ("guest-ping"); unavailable when no agent answers in time.
    virtual Status ping_guest_agent(const std::string& domain, std::chrono::milliseconds timeout) = 0;
    // Lifecycle events of every domain go to `handler` (on a backend thread) until the
    // backend is destroyed. One handler; a second call replaces it.
    virtual Status watch(EventHandler handler) = 0;
};

}  // namespace vmha::hv
