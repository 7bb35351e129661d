// The probes of each checker kind (made by factory.cc).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/thread_pool.hpp>

#include <checkers/domain_events.h>
#include <vmha/hypervisor/hypervisor.h>

#include "probe.h"

namespace vmha::checkers::detail {

struct VmOptions {
    hv::Hypervisor* hypervisor = nullptr;
    std::string domain;
    bool guest_agent = false;
    std::chrono::milliseconds timeout{10000};
};
// The vm checker: a ProbingChecker that also re-checks on each lifecycle event of its domain.
std::unique_ptr<Checker> make_vm_checker(std::string name, boost::asio::any_io_executor executor,
                                         boost::asio::thread_pool& blocking, Schedule schedule,
                                         VmOptions options, DomainEvents* events);
// The verdict on one status (and, when asked and running, one guest-agent answer).
CheckResult judge_domain(const std::string& domain, const Result<hv::DomainStatus>& status,
                         const Status* agent);

std::unique_ptr<Probe> make_process_probe(boost::asio::any_io_executor executor,
                                          boost::asio::thread_pool& blocking, std::string process);
// True when a live (non-zombie) process runs the executable `name`.
bool process_exists(const std::string& name);

std::unique_ptr<Probe> make_command_probe(boost::asio::any_io_executor executor,
                                          std::vector<std::string> argv,
                                          std::chrono::milliseconds timeout);

std::unique_ptr<Probe> make_tcp_probe(boost::asio::any_io_executor executor, std::string host,
                                      std::uint16_t port, std::chrono::milliseconds timeout);

std::unique_ptr<Probe> make_ping_probe(boost::asio::any_io_executor executor, std::string host,
                                       std::chrono::milliseconds timeout);

std::unique_ptr<Probe> make_interface_probe(boost::asio::any_io_executor executor,
                                            boost::asio::thread_pool& blocking, std::string sysfs,
                                            std::string interface);
// The verdict on /sys/class/net/IF under `sysfs`.
CheckResult judge_interface(const std::string& sysfs, const std::string& interface);

}  // namespace vmha::checkers::detail
