// make_checker(): builds the checker a module's configuration asks for.
//
// Every checker made here runs its checks every `interval` (the first at once), gives each
// check `timeout`, and turns `failures` consecutive failed checks into a failed verdict (one
// shared implementation for every kind; see docs/checkers.md). Kinds:
//   vm         the module's domain through the Hypervisor: status() every interval and at once
//              on each lifecycle event from `events`; with guest_agent also a guest-agent ping
//   process    a process with that executable name exists (/proc/*/comm, /proc/*/exe)
//   command    argv run without a shell; exit 0 = healthy; killed (whole process group) after
//              `timeout`
//   tcp        a TCP connection to host:port opens within `timeout`
//   ping       an ICMP echo reply from host within `timeout` (raw socket: root or CAP_NET_RAW)
//   interface  /sys/class/net/IF reports the link up
//   replication: refused with errc::unsupported (the module watches replication itself)
#pragma once

#include <memory>
#include <string>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/thread_pool.hpp>

#include <checkers/checker.h>
#include <vmha/config/config.h>
#include <vmha/error.h>
#include <vmha/hypervisor/hypervisor.h>

namespace vmha::checkers {

class DomainEvents;

struct CheckerContext {
    boost::asio::any_io_executor executor;         // the module's loop: reports are made here
    boost::asio::thread_pool* blocking = nullptr;  // where blocking work runs (libvirt calls,
                                                   // /proc and /sys reads); required by the
                                                   // vm, process and interface checkers
    hv::Hypervisor* hypervisor = nullptr;          // vm checker; must outlive `blocking`'s jobs
    std::string domain;                            // vm checker: the module's domain name
    DomainEvents* events = nullptr;                // vm checker: lifecycle events (optional;
                                                   // without it the checker only polls)
    std::string sysfs = "/sys";                    // interface checker: where sysfs is mounted
};

// Refuses (invalid_argument) a configuration or context that lacks what the kind needs, and
// (unsupported) the replication kind.
Result<std::unique_ptr<Checker>> make_checker(const config::Checker& config,
                                              CheckerContext context);

}  // namespace vmha::checkers
