// Helpers for the peer tests: certificates made with configs/vmha-certs.sh in a temporary
// directory, module files on loopback, free ports.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include <vmha/config/config.h>

namespace vmha::peer::test {

// One temporary directory per test binary holding:
//   DIR/ca.pem + hv1, hv2, hv3 certificates (the cluster CA)
//   DIR/other/ca.pem + hv2 (an unrelated CA)
const std::filesystem::path& cert_dir();

// A node config for `name` with certificates from `dir` (cert_dir() or cert_dir()/"other").
config::Node node_config(const std::string& name, const std::filesystem::path& dir);

struct Ports {
    std::uint16_t control = 0;
    std::uint16_t lan = 0;
    std::uint16_t backup = 0;
};
// Ports free on 127.0.0.1 and 127.0.0.2 (TCP for control, UDP for the heartbeat paths).
Ports free_ports();

struct ModuleText {
    std::string module = "web1";
    std::string peer_name = "hv2";  // the second node's name (at 127.0.0.2)
    std::string replication_timeout = "5s";
    int checker_port = 80;
};
std::string module_yaml(const Ports& ports, const ModuleText& text = {});
config::Module parse_module(const std::string& yaml);

}  // namespace vmha::peer::test
