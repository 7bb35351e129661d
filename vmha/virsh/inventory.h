// Which domains vmha-virsh shows, and which copy of each: the HA-managed domains are the `vm.name`
// of the modules configured on this node (the node file and its modules_dir). Each module names
// two nodes with a hypervisor URI; every URI is opened read-only and the domain looked up there.
// The copy shown is the active one (running, paused...), else this node's. A domain active on
// more than one node is flagged (ha-status reports it). A URI that cannot be reached is skipped
// for that node and remembered, never fatal unless no URI at all can be reached.
//
// With -c URI only that connection is asked (still for HA-managed names only).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <libvirt/libvirt.h>

#include <vmha/config/load.h>

namespace vmha::virsh {

struct ConnectionCloser {
    void operator()(virConnectPtr c) const { virConnectClose(c); }
};
struct DomainFreer {
    void operator()(virDomainPtr d) const { virDomainFree(d); }
};
using ConnectionPtr = std::unique_ptr<virConnect, ConnectionCloser>;
using DomainPtr = std::unique_ptr<virDomain, DomainFreer>;

// One node's copy of a domain.
struct Copy {
    std::string node;              // node name (the URI itself for a -c URI that no module names)
    virConnectPtr conn = nullptr;  // owned by the Inventory
    DomainPtr dom;
    bool active = false;
};

struct HaDomain {
    std::string module;        // module name
    std::string name;          // the domain's name (vm.name)
    std::vector<Copy> copies;  // the nodes where the domain is defined (reachable ones)
    std::size_t shown = 0;     // index in copies of the copy shown
    const Copy& copy() const { return copies[shown]; }
    std::vector<std::string> active_nodes() const;
};

// A node whose hypervisor could not be reached.
struct Unreachable {
    std::string node;
    std::string uri;
    std::string message;  // libvirt's sentence
};

class Inventory {
  public:
    // Opens every URI named for this node's modules (or only `only_uri`) and finds the
    // domains. Fails (nullopt, with `message` set to libvirt's sentence) only when no
    // connection at all could be opened while some were needed.
    static std::optional<Inventory> gather(const config::NodeSetup& setup,
                                           const std::optional<std::string>& only_uri,
                                           std::string& message);

    // HA-managed domains defined on some reachable node, in module file order.
    std::vector<HaDomain>& domains() { return domains_; }
    // Every configured module (for ha-status, including those whose domain is nowhere).
    const std::vector<std::string>& undefined_modules() const { return undefined_; }
    const std::vector<Unreachable>& unreachable() const { return unreachable_; }

  private:
    struct Opened {
        std::string uri;
        ConnectionPtr conn;
    };
    std::vector<Opened> connections_;  // declared first: destroyed after the domains
    std::vector<HaDomain> domains_;
    std::vector<std::string> undefined_;
    std::vector<Unreachable> unreachable_;
};

// libvirt's sentence for this thread's last error ("" when none); does not reset it.
std::string last_libvirt_message();

}  // namespace vmha::virsh
