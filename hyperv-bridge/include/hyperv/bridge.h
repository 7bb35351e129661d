// Hyper-V backend boundary: vmhad drives Hyper-V hosts through a PowerShell/WMI bridge
// (a script on the Windows host speaking JSON lines over TLS), behind the same Hypervisor
// interface as the libvirt backend. This header names the bridge's operations; the client,
// the script and a simulator for tests come with the Hyper-V work.
#pragma once

#include <string_view>

namespace vmha::hyperv {

// Bridge protocol operations (one JSON request, one JSON reply each).
enum class Operation { get_vm, start_vm, stop_vm, turn_off_vm, import_vm, remove_vm, watch_events };

constexpr std::string_view operation_name(Operation op) {
    switch (op) {
        case Operation::get_vm: return "Get-VM";
        case Operation::start_vm: return "Start-VM";
        case Operation::stop_vm: return "Stop-VM";
        case Operation::turn_off_vm: return "Stop-VM -TurnOff";
        case Operation::import_vm: return "Import-VM";
        case Operation::remove_vm: return "Remove-VM";
        case Operation::watch_events: return "Register-CimIndicationEvent";
    }
    return "";
}

}  // namespace vmha::hyperv
