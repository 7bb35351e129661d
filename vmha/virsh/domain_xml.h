// What virsh reads from a domain's XML: its disks (domblklist) and its title (list --title).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <libvirt/libvirt.h>

namespace vmha::virsh {

// One <disk>, with virsh's XPath results; nullopt where virsh's virXPathString() gives NULL
// (absent or empty).
struct DiskRow {
    std::optional<std::string> type;    // ./@type
    std::optional<std::string> device;  // ./@device
    std::optional<std::string> target;  // ./target/@dev
    std::optional<std::string> source;  // file|dev|dir|name|volume|path, or nvme://PCI/NS
};

// The ./devices/disk elements of a domain XML, in order; nullopt when it does not parse.
std::optional<std::vector<DiskRow>> disks_of(const std::string& xml);

// virshGetDomainDescription(title): the metadata title, "" when there is none; nullopt on
// failure (libvirt's error left set).
std::optional<std::string> domain_title(virDomainPtr dom);

}  // namespace vmha::virsh
