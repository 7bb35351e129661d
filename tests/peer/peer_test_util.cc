#include "peer_test_util.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <cstdlib>
#include <random>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <vmha/config/load.h>

namespace vmha::peer::test {

namespace {

void run(const std::string& command) {
    const int rc = std::system((command + " >/dev/null").c_str());
    if (rc != 0) throw std::runtime_error(fmt::format("\"{}\" failed with status {}", command, rc));
}

class CertDir {
public:
    CertDir() {
        char pattern[] = "/tmp/vmha-peer-test-XXXXXX";
        if (::mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
        dir_ = pattern;
        const std::string script = fmt::format("sh {}", VMHA_CERTS_SCRIPT);
        run(fmt::format("{} ca {}", script, dir_.string()));
        for (const char* node : {"hv1", "hv2", "hv3"}) run(fmt::format("{} node {} {}", script, dir_.string(), node));
        run(fmt::format("{} ca {}/other", script, dir_.string()));
        run(fmt::format("{} node {}/other hv2", script, dir_.string()));
    }
    ~CertDir() {
        std::error_code ignored;
        std::filesystem::remove_all(dir_, ignored);
    }
    const std::filesystem::path& path() const { return dir_; }

private:
    std::filesystem::path dir_;
};

bool free_on(int type, const char* address, std::uint16_t port) {
    const int fd = ::socket(AF_INET, type, 0);
    if (fd < 0) return false;
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    ::inet_pton(AF_INET, address, &sa.sin_addr);
    const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
    ::close(fd);
    return ok;
}

}  // namespace

const std::filesystem::path& cert_dir() {
    static CertDir dir;
    return dir.path();
}

config::Node node_config(const std::string& name, const std::filesystem::path& dir) {
    config::Node node;
    node.name = name;
    node.tls = config::Tls{(dir / "ca.pem").string(), (dir / (name + ".pem")).string(),
                           (dir / (name + ".key")).string()};
    return node;
}

Ports free_ports() {
    static std::mt19937 random(std::random_device{}());
    std::uniform_int_distribution<int> pick(20000, 59000);
    auto port = [&](int type) {
        for (;;) {
            const auto p = static_cast<std::uint16_t>(pick(random));
            if (free_on(type, "127.0.0.1", p) && free_on(type, "127.0.0.2", p)) return p;
        }
    };
    Ports ports;
    ports.control = port(SOCK_STREAM);
    do ports.lan = port(SOCK_DGRAM); while (ports.lan == ports.control);
    do ports.backup = port(SOCK_DGRAM); while (ports.backup == ports.lan || ports.backup == ports.control);
    return ports;
}

std::string module_yaml(const Ports& ports, const ModuleText& text) {
    return fmt::format(R"(module: {module}
vm:
  name: web1
  domain_xml: /etc/vmha/domains/web1.xml
disks:
  - path: /var/lib/vm/web1.img
nodes:
  - name: hv1
    address: 127.0.0.1
    control_port: {control}
  - name: {peer}
    address: 127.0.0.2
    control_port: {control}
replication:
  port: 7801
  timeout: {timeout}
heartbeat:
  interval: 100ms
  timeout: 600ms
  paths:
    - name: lan
      port: {lan}
      addresses: {{hv1: 127.0.0.1, {peer}: 127.0.0.2}}
    - name: backup
      port: {backup}
      addresses: {{hv1: 127.0.0.1, {peer}: 127.0.0.2}}
checkers:
  - type: vm
  - type: tcp
    host: 127.0.0.1
    port: {checker_port}
)",
                       fmt::arg("module", text.module), fmt::arg("control", ports.control), fmt::arg("peer", text.peer_name),
                       fmt::arg("timeout", text.replication_timeout), fmt::arg("lan", ports.lan),
                       fmt::arg("backup", ports.backup), fmt::arg("checker_port", text.checker_port));
}

config::Module parse_module(const std::string& yaml) {
    config::Findings findings;
    auto file = config::parse_file("web1.yaml", yaml, findings);
    std::string all;
    for (const auto& f : findings.items) all += f.to_string() + "\n";
    EXPECT_TRUE(file.valid && file.module) << all;
    return file.module ? *file.module : config::Module{};
}

}  // namespace vmha::peer::test
