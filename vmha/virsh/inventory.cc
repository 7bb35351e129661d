// Gathering the HA-managed domains from every node's hypervisor (read-only connections).
#include "inventory.h"

#include <algorithm>

#include <libvirt/virterror.h>

namespace vmha::virsh {

std::string last_libvirt_message() {
    const virError* e = virGetLastError();
    if (e == nullptr || e->code == VIR_ERR_OK || e->message == nullptr) return {};
    return e->message;
}

std::vector<std::string> HaDomain::active_nodes() const {
    std::vector<std::string> nodes;
    for (const auto& c : copies) {
        if (c.active) nodes.push_back(c.node);
    }
    return nodes;
}

std::optional<Inventory> Inventory::gather(const config::NodeSetup& setup,
                                           const std::optional<std::string>& only_uri,
                                           std::string& message) {
    Inventory inv;
    std::string first_failure;
    // Opens `uri` once; nullptr when it cannot be reached (remembered per node).
    auto open = [&](const std::string& node, const std::string& uri) -> virConnectPtr {
        for (const auto& o : inv.connections_) {
            if (o.uri == uri) return o.conn.get();
        }
        for (const auto& u : inv.unreachable_) {
            if (u.uri == uri) {
                if (u.node != node) inv.unreachable_.push_back({node, uri, u.message});
                return nullptr;
            }
        }
        virConnectPtr conn = virConnectOpenReadOnly(uri.c_str());
        if (conn == nullptr) {
            std::string why = last_libvirt_message();
            virResetLastError();
            if (first_failure.empty()) first_failure = why;
            inv.unreachable_.push_back({node, uri, why});
            return nullptr;
        }
        inv.connections_.push_back({uri, ConnectionPtr(conn)});
        return conn;
    };

    // -c URI: that hypervisor must answer, whether or not a module names it (as in virsh).
    bool needed = only_uri.has_value();
    if (only_uri) open(*only_uri, *only_uri);
    for (const auto& module : setup.modules) {
        // This node first: its copy is the one shown when none is active.
        std::vector<std::pair<std::string, std::string>> where;  // node, uri
        if (only_uri) {
            std::string node = *only_uri;
            for (const auto& n : module.nodes) {
                if (n.hypervisor_uri == *only_uri) {
                    node = n.name;
                    break;
                }
            }
            where.emplace_back(node, *only_uri);
        } else {
            if (const auto* local = module.node(setup.node.name))
                where.emplace_back(local->name, local->hypervisor_uri);
            for (const auto& n : module.nodes) {
                if (n.name != setup.node.name) where.emplace_back(n.name, n.hypervisor_uri);
            }
        }
        HaDomain ha;
        ha.module = module.name;
        ha.name = module.vm.name;
        std::vector<std::string> seen_uris;
        for (const auto& [node, uri] : where) {
            needed = true;
            // Two nodes on one URI (a test, or a mistake) are one hypervisor: ask it once.
            if (std::find(seen_uris.begin(), seen_uris.end(), uri) != seen_uris.end()) continue;
            seen_uris.push_back(uri);
            virConnectPtr conn = open(node, uri);
            if (conn == nullptr) continue;
            virDomainPtr dom = virDomainLookupByName(conn, module.vm.name.c_str());
            if (dom == nullptr) {
                virResetLastError();
                continue;
            }
            Copy copy;
            copy.node = node;
            copy.conn = conn;
            copy.dom.reset(dom);
            copy.active = virDomainIsActive(dom) == 1;
            virResetLastError();
            ha.copies.push_back(std::move(copy));
        }
        if (ha.copies.empty()) {
            inv.undefined_.push_back(module.name);
            continue;
        }
        ha.shown = 0;  // this node's copy (or the first reachable) unless another is active
        for (std::size_t i = 0; i < ha.copies.size(); ++i) {
            if (ha.copies[i].active) {
                ha.shown = i;
                break;
            }
        }
        inv.domains_.push_back(std::move(ha));
    }
    if (needed && inv.connections_.empty()) {
        message = first_failure;
        return std::nullopt;
    }
    return inv;
}

}  // namespace vmha::virsh
