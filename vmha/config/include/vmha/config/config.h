// The configuration model: one module file per protected VM, one node file per hypervisor.
//
// Files are YAML (docs/config-reference.md lists every key). They are parsed into the typed
// structures below by load_module() / load_node(), which never stop at the first mistake:
// every finding is collected with its file, line, column and key (see findings.h). A file
// with any error-level finding yields no configuration, and nothing starts on it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <vmha/config/address.h>
#include <vmha/config/cron.h>
#include <vmha/config/units.h>

namespace vmha::config {

// A node runs at most this many mirror modules (one imagesyncd and one VM each).
inline constexpr std::size_t max_modules_per_node = 32;

enum class HypervisorKind { libvirt, hyperv };
enum class DiskFormat { raw, qcow2, vhdx };
enum class CheckerKind { vm, process, command, tcp, ping, interface, replication };
enum class CheckerAction { restart, failover, wait };
enum class FailbackMode { manual, automatic, scheduled };
enum class WitnessKind { vmha, etcd };
// What imagesyncd does when a reconnect finds a split brain (docs/generations.md).
enum class SplitBrainPolicy { disconnect, discard_zero_changes };

// Where a value came from, for messages that point back into the file.
struct SourceLocation {
    std::string file;
    int line = 0;    // 1-based; 0 when unknown
    int column = 0;  // 1-based
    std::string to_string() const;  // "file:line:column"
};

struct Disk {
    std::string path;         // image file on this node (same path on both nodes)
    std::string export_name;  // NBD export name; default: the file's base name without extension
    DiskFormat format = DiskFormat::raw;
    std::string target;       // guest device, e.g. "vda"; empty = matched by path in the domain XML
    SourceLocation where;
};

struct ModuleNode {
    std::string name;            // node name, as in that node's node file
    Host address;                // control-channel address of the node's vmhad
    std::string hypervisor_uri;  // e.g. "qemu:///system"; for Hyper-V the bridge endpoint
    std::optional<Host> replication_address;  // defaults to `address`
    std::uint16_t control_port = 7800;        // the vmhad control channel (TLS) on `address`
    SourceLocation where;
};

// The vmhad control channel's port when a module's node entry does not set one.
inline constexpr std::uint16_t default_control_port = 7800;

struct Replication {
    std::uint16_t port = 0;                         // imagesyncd replication listener
    Duration timeout = std::chrono::milliseconds(1500);  // peer silent this long -> go on alone
    Duration connect_timeout = std::chrono::seconds(10);
    std::uint64_t resync_rate = 0;                  // bytes/s; 0 = unlimited
    std::uint64_t activity_log_extent = 4u << 20;   // bytes per activity-log extent
    std::uint64_t chunk_size = 64u << 10;           // dirty-map / checksum granularity
    SplitBrainPolicy split_brain = SplitBrainPolicy::disconnect;  // imagesyncd --split-brain
    std::string tcp_congestion = "cubic";  // imagesyncd --tcp-congestion; "system": the kernel's
    SourceLocation where;
};

struct HeartbeatPath {
    std::string name;
    std::uint16_t port = 0;
    std::map<std::string, Host> addresses;  // node name -> address on this network
    SourceLocation where;
};

struct Heartbeat {
    Duration interval = std::chrono::milliseconds(250);
    Duration timeout = std::chrono::milliseconds(1500);  // every path silent this long -> peer lost
    std::vector<HeartbeatPath> paths;
};

struct Checker {
    std::string name;  // unique within the module; defaults to the kind
    CheckerKind kind = CheckerKind::vm;
    CheckerAction action = CheckerAction::restart;
    Duration interval = std::chrono::seconds(5);
    Duration timeout = std::chrono::seconds(10);
    unsigned failures = 1;  // consecutive failures before the action
    // Kind-specific settings (only those of `kind` are accepted in the file):
    bool guest_agent = false;            // vm: also ping the QEMU guest agent
    std::string process;                 // process: executable name to look for
    std::vector<std::string> command;    // command: argv (a string is split on blanks)
    std::optional<Host> host;            // tcp, ping
    std::uint16_t port = 0;              // tcp
    std::string interface;               // interface: link that must be up
    SourceLocation where;
};

struct RestartPolicy {
    unsigned attempts = 3;                       // local restarts allowed in `window`...
    Duration window = std::chrono::hours(24);    // ...then the module fails over
};

struct Failback {
    FailbackMode mode = FailbackMode::manual;
    std::string preferred_node;                  // empty = none
    std::optional<CronSchedule> schedule;        // mode scheduled
    std::string timezone = "UTC";                // for the schedule
    Duration stable_for = std::chrono::minutes(5);  // automatic: UpToDate this long first
};

struct Witness {
    WitnessKind kind = WitnessKind::vmha;
    std::vector<HostPort> endpoints;
    Duration lease = std::chrono::seconds(10);
    Duration margin = std::chrono::seconds(1);  // the lease counts as lost this long before its end
    std::string name;                           // vmha: the witness certificate's name; empty = any
    std::string prefix = "/vmha/leases/";       // etcd: key prefix
};

// The fencing hook: a command (IPMI, a cloud API, ...) that makes sure the silent peer no longer
// runs the VM, run before this node starts the VM without the peer's agreement. Exit 0 = fenced.
// Placeholders in the arguments: {peer}, {self}, {module}.
struct Fencing {
    std::vector<std::string> command;
    Duration timeout = std::chrono::seconds(60);
    SourceLocation where;
};

struct HealthCheck {
    std::uint16_t port = 0;  // 0 when the section is absent: no health-check endpoint
    std::vector<Cidr> allow;  // clients allowed; empty = everyone
    SourceLocation where;     // of the port
};

struct Vm {
    std::string name;  // libvirt domain name or Hyper-V VM name
    HypervisorKind hypervisor = HypervisorKind::libvirt;
    std::string domain_xml;  // libvirt: the domain definition to run on either node
    Duration shutdown_timeout = std::chrono::minutes(2);  // ACPI shutdown, then destroy
};

struct Module {
    std::string name;
    Vm vm;
    std::vector<Disk> disks;
    std::vector<ModuleNode> nodes;  // exactly two
    Replication replication;
    Heartbeat heartbeat;
    std::vector<Checker> checkers;
    RestartPolicy restart;
    Failback failback;
    std::optional<Fencing> fencing;  // absent: no hook
    std::optional<Witness> witness;
    HealthCheck health_check;
    SourceLocation where;  // of the module name

    // Every port this module listens on, with where it was set and what it is for.
    // Heartbeats are UDP (and several paths may share one port, on different networks);
    // replication and the health check are TCP.
    struct Port {
        std::uint16_t port;
        bool udp;
        std::string key;
        SourceLocation where;
    };
    std::vector<Port> ports() const;

    const ModuleNode* node(const std::string& node_name) const;
    const ModuleNode* peer_of(const std::string& node_name) const;
};

struct Tls {
    std::string ca;
    std::string cert;
    std::string key;
};

struct Node {
    std::string name;
    std::string state_dir = "/var/lib/vmha";
    std::string run_dir = "/run/vmha";
    std::string modules_dir = "/etc/vmha/modules";
    std::string admin_socket = "/run/vmha/admin.sock";
    std::optional<Tls> tls;
    std::string log_level = "info";
    SourceLocation where;
};

std::string_view to_string(HypervisorKind);
std::string_view to_string(DiskFormat);
std::string_view to_string(CheckerKind);
std::string_view to_string(CheckerAction);
std::string_view to_string(SplitBrainPolicy);
std::string_view to_string(FailbackMode);
std::string_view to_string(WitnessKind);

}  // namespace vmha::config
