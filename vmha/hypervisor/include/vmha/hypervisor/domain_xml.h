// The domain XML rewrite behind Hypervisor::define(): replicated file disks become NBD disks.
//
// Pure (no hypervisor involved); used by every libvirt-speaking backend and by the fake.
#pragma once

#include <string>

#include <vmha/error.h>
#include <vmha/hypervisor/hypervisor.h>

namespace vmha::hv {

// Returns spec.xml with each disk of spec.disks rewritten from
//   <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='IMAGE'/>...
// into
//   <disk type='network' device='disk'>
//     <driver name='qemu' type='FORMAT' cache='none' error_policy='stop' rerror_policy='stop' .../>
//     <source protocol='nbd' name='EXPORT'><host transport='unix' socket='SOCKET'/></source>...
// A disk is matched by its <target dev=...> when NbdDisk::target is set, else by its
// <source file=...>. Everything else in the disk (target, boot order, address, serial, other
// driver attributes except io=, which QEMU ignores for NBD) and every other element is kept.
// Errors (invalid_argument): XML that does not parse, a root other than <domain>, a <name>
// other than spec.name, an incomplete NbdDisk, a replicated disk that is not a
// <disk type='file'> of the XML, or one disk claimed by two NbdDisks.
// `uuid`, when not empty, is given to a definition that names none (the libvirt backend passes
// the existing definition's, so that redefining the domain updates it instead of clashing).
Result<std::string> rewrite_domain_xml(const DomainSpec& spec, const std::string& uuid = {});

}  // namespace vmha::hv
