// Two vmhad on one machine for tests: nodes hv1 (127.0.0.1) and hv2 (127.0.0.2) — Linux routes
// all of 127/8 to lo, so both use the same ports — each with its own node file, state and run
// directories, certificates from configs/vmha-certs.sh, and its own view of the module's image
// path: every vmhad runs in a private mount namespace where <dir>/img is its node's images
// folder (a module names the same image path on both nodes). vmhad spawns imagesyncd, which
// inherits that view. Everything runs on private ports in a temporary directory and is ended by
// PID when the test ends, even when it fails.
#pragma once

#include <csignal>
#include <functional>
#include <map>
#include <string>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include "../imagesync/daemon.h"

namespace vmhad_test {

using namespace imagesync_test;
using namespace std::chrono_literals;

inline bool poll_until(std::chrono::milliseconds timeout, const std::function<bool()>& done) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
        if (done()) return true;
        std::this_thread::sleep_for(50ms);  // poll interval
    }
    return done();
}

struct ClusterOptions {
    std::map<std::string, std::string> hypervisor_uri{{"hv1", "test:///default"}, {"hv2", "test:///default"}};
    std::string domain_xml;           // with @IMAGE@ for the image path; empty: a test-driver domain
    unsigned restart_attempts = 3;
    std::string checker_interval = "300ms";
    std::uint64_t image_size = 64u << 20;
    // Per-node extra text appended to that node's copy of the module file (to make them differ).
    std::map<std::string, std::string> module_suffix;
    // A real vmha-witness on a private port, named in the module's `witness` section.
    bool witness = false;
    std::string witness_lease = "4s";
    // With `witness`: the leases in a real etcd (Debian's etcd-server) instead of vmha-witness.
    bool etcd = false;
};

class Cluster {
public:
    explicit Cluster(ClusterOptions options = {}) : options_(std::move(options)) {
        control_ = free_port();
        replication_ = free_port();
        heartbeat_ = free_port();
        health_ = free_port();
        certs("ca", dir_ / "certs", "");
        for (const char* n : {"hv1", "hv2"}) certs("node", dir_ / "certs", n);
        if (options_.witness && options_.etcd) {
            witness_port_ = free_port();
            etcd_peer_port_ = free_port();
            while (etcd_peer_port_ == witness_port_) etcd_peer_port_ = free_port();
        } else if (options_.witness) {
            witness_port_ = free_port();
            certs("node", dir_ / "certs", "witness1");
            const fs::path c = dir_ / "certs";
            std::ofstream(dir_ / "witness.yaml")
                << "name: witness1\nlisten: 127.0.0.1:" << witness_port_ << "\ntls:\n  ca: " << (c / "ca.pem").string()
                << "\n  cert: " << (c / "witness1.pem").string() << "\n  key: " << (c / "witness1.key").string()
                << "\nstate_file: " << (dir_ / "leases.json").string() << "\n";
        }
        fs::create_directories(dir_ / "img");
        write_configs();
    }
    Cluster(const Cluster&) = delete;
    Cluster& operator=(const Cluster&) = delete;
    ~Cluster() {
        for (const char* n : {"hv1", "hv2"}) {
            kill_vmhad(n, SIGKILL);
            kill_imagesyncd(n);
        }
        stop_witness();
        if (::testing::Test::HasFailure()) {
            for (const char* n : {"hv1", "hv2"}) {
                std::fprintf(stderr, "---- vmhad %s log ----\n%s\n---- imagesyncd %s log ----\n%s\n", n,
                             read_file(node_dir(n) / "vmhad.log").c_str(), n,
                             read_file(node_dir(n) / "run/web1/imagesyncd.log").c_str());
            }
        }
    }

    const fs::path& dir() const { return dir_.path(); }
    fs::path node_dir(const std::string& n) const { return dir_ / n; }
    fs::path image(const std::string& n) const { return node_dir(n) / "images/web1.raw"; }
    std::string image_path_in_module() const { return (dir_ / "img/web1.raw").string(); }
    std::string address(const std::string& n) const { return n == "hv1" ? "127.0.0.1" : "127.0.0.2"; }
    std::uint16_t health_port() const { return health_; }

    // Replaces a node's certificate with one from an unrelated CA.
    void use_foreign_certificate(const std::string& n) {
        certs("ca", dir_ / "foreign", "");
        certs("node", dir_ / "foreign", n);
        fs::copy_file(dir_ / "foreign" / (n + ".pem"), dir_ / "certs" / (n + ".pem"),
                      fs::copy_options::overwrite_existing);
        fs::copy_file(dir_ / "foreign" / (n + ".key"), dir_ / "certs" / (n + ".key"),
                      fs::copy_options::overwrite_existing);
        // The node trusts the foreign CA, so that it can start; the peer does not.
        fs::copy_file(dir_ / "foreign" / "ca.pem", node_dir(n) / "ca.pem", fs::copy_options::overwrite_existing);
        write_configs();
    }

    // The witness (ClusterOptions::witness): started, and ready once its port accepts.
    ::testing::AssertionResult start_witness() {
        if (options_.etcd) {
            const std::string client = "http://127.0.0.1:" + std::to_string(witness_port_);
            const std::string peer = "http://127.0.0.1:" + std::to_string(etcd_peer_port_);
            witness_pid_ = spawn({"etcd", "--name", "t", "--data-dir", (dir_ / "etcd").string(), "--listen-client-urls",
                                  client, "--advertise-client-urls", client, "--listen-peer-urls", peer,
                                  "--initial-advertise-peer-urls", peer, "--initial-cluster", "t=" + peer,
                                  "--initial-cluster-state", "new", "--heartbeat-interval", "50",
                                  "--election-timeout", "500", "--log-level", "warn"},
                                 dir_ / "witness.log");
        } else {
            witness_pid_ = spawn({VMHA_WITNESS_PATH, "--config", (dir_ / "witness.yaml").string(), "--log-level",
                                  "debug"},
                                 dir_ / "witness.log");
        }
        const bool up = poll_until(20s, [&] {
            const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
            sockaddr_in a{};
            a.sin_family = AF_INET;
            a.sin_port = htons(witness_port_);
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
            ::close(fd);
            return ok;
        });
        if (up) return ::testing::AssertionSuccess();
        return ::testing::AssertionFailure() << "vmha-witness did not listen:\n" << read_file(dir_ / "witness.log");
    }
    void stop_witness() {
        if (witness_pid_ <= 0) return;
        ::kill(witness_pid_, SIGKILL);
        (void)wait_for(witness_pid_, 30s);
        witness_pid_ = -1;
    }

    void start_vmhad(const std::string& n) {
        const std::string script = "mount --bind " + (node_dir(n) / "images").string() + " " +
                                   (dir_ / "img").string() + " && exec " + VMHAD_PATH + " --config " +
                                   (node_dir(n) / "vmha.yaml").string() + " --imagesyncd " +
                                   IMAGESYNCD_PATH + " --log-level debug";
        const fs::path log = node_dir(n) / "vmhad.log";
        // Appended across restarts: spawn() truncates, so keep earlier runs' lines.
        const std::string previous = read_file(log);
        pids_[n] = spawn({"unshare", "-m", "--propagation", "private", "sh", "-c", script}, log);
        if (!previous.empty()) {
            std::ofstream(node_dir(n) / "vmhad.previous.log", std::ios::app) << previous;
        }
    }
    ::testing::AssertionResult wait_admin(const std::string& n, std::chrono::seconds timeout = 30s) {
        if (poll_until(timeout, [&] { return run_vmha(n, {"status", "--json"}).exit_code == 0; })) {
            return ::testing::AssertionSuccess();
        }
        return ::testing::AssertionFailure() << "vmhad " << n << " did not answer:\n"
                                             << read_file(node_dir(n) / "vmhad.log");
    }
    void kill_vmhad(const std::string& n, int sig) {
        auto it = pids_.find(n);
        if (it == pids_.end() || it->second <= 0) return;
        ::kill(it->second, sig);
        (void)wait_for(it->second, 30s);
        it->second = -1;
    }
    pid_t imagesyncd_pid(const std::string& n) const {
        const std::string text = read_file(node_dir(n) / "run/web1/imagesyncd.pid");
        return text.empty() ? -1 : static_cast<pid_t>(std::stol(text));
    }
    void kill_imagesyncd(const std::string& n) {
        const pid_t pid = imagesyncd_pid(n);
        // Only a process whose command line is our imagesyncd with this node's control socket.
        if (pid <= 0) return;
        const std::string cmdline = read_file("/proc/" + std::to_string(pid) + "/cmdline");
        if (cmdline.find((node_dir(n) / "run/web1/imagesync.sock").string()) == std::string::npos) return;
        ::kill(pid, SIGKILL);
        poll_until(10s, [&] { return ::kill(pid, 0) != 0; });
    }

    // Sends one request to a node's imagesyncd control socket; its reply (null if unreachable).
    nlohmann::json imagesync_control(const std::string& n, const nlohmann::json& request) {
        const int fd = connect_unix(node_dir(n) / "run/web1/imagesync.sock");
        if (fd < 0) return nullptr;
        const std::string line = request.dump() + "\n";
        if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
            ::close(fd);
            return nullptr;
        }
        std::string in;
        char buf[4096];
        ssize_t n_read;
        while (in.find('\n') == std::string::npos && (n_read = ::read(fd, buf, sizeof buf)) > 0) {
            in.append(buf, static_cast<std::size_t>(n_read));
        }
        ::close(fd);
        return nlohmann::json::parse(in.substr(0, in.find('\n')), nullptr, false);
    }
    fs::path nbd_socket(const std::string& n) const { return node_dir(n) / "run/web1/nbd.sock"; }

    ToolResult run_vmha(const std::string& n, std::vector<std::string> args) {
        std::vector<std::string> argv{VMHA_PATH, "--socket", (node_dir(n) / "run/admin.sock").string()};
        argv.insert(argv.end(), args.begin(), args.end());
        return run_tool(argv, dir_.path(), 60s);
    }
    nlohmann::json module_status(const std::string& n) {
        auto r = run_vmha(n, {"status", "--json", "web1"});
        if (r.exit_code != 0) return nullptr;
        auto j = nlohmann::json::parse(r.output, nullptr, false);
        if (j.is_discarded() || !j.contains("modules") || j["modules"].empty()) return nullptr;
        return j["modules"][0];
    }
    std::string state(const std::string& n) {
        auto m = module_status(n);
        return m.is_object() ? m.value("state", "") : "";
    }
    ::testing::AssertionResult wait_state(const std::string& n, const std::string& want,
                                          std::chrono::seconds timeout = 60s) {
        if (poll_until(timeout, [&] { return state(n) == want; })) return ::testing::AssertionSuccess();
        return ::testing::AssertionFailure() << n << " did not reach " << want << " within "
                                             << timeout.count() << " s; status: "
                                             << module_status(n).dump();
    }
    // HTTP status of GET http://ADDRESS:PORT/PATH, by curl.
    int http(const std::string& n, const std::string& path) {
        auto r = run_tool({"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                           "http://" + address(n) + ":" + std::to_string(health_) + path},
                          dir_.path(), 20s);
        return std::atoi(r.output.c_str());
    }

private:
    void certs(const std::string& what, const fs::path& where, const std::string& node) {
        std::vector<std::string> argv{"sh", std::string(VMHA_CONFIGS_DIR) + "/vmha-certs.sh", what, where.string()};
        if (!node.empty()) argv.push_back(node);
        auto r = run_tool(argv, dir_.path(), 60s);
        if (r.exit_code != 0) throw std::runtime_error("vmha-certs.sh failed: " + r.output);
    }

    void write_configs() {
        const std::string domain_xml =
            options_.domain_xml.empty()
                ? "<domain type='test'><name>web1</name><memory>65536</memory><os><type>hvm</type></os>"
                  "<devices><disk type='file' device='disk'><driver name='qemu' type='raw'/>"
                  "<source file='@IMAGE@'/><target dev='vda' bus='virtio'/></disk></devices></domain>\n"
                : options_.domain_xml;
        std::string xml = domain_xml;
        const std::string key = "@IMAGE@";
        for (auto pos = xml.find(key); pos != std::string::npos; pos = xml.find(key)) {
            xml.replace(pos, key.size(), image_path_in_module());
        }
        std::ofstream(dir_ / "web1.xml") << xml;
        for (const char* n : {"hv1", "hv2"}) {
            const fs::path d = node_dir(n);
            for (const char* sub : {"modules", "state", "run", "images"}) fs::create_directories(d / sub);
            if (!fs::exists(image(n))) {
                std::ofstream(image(n)).close();
                fs::resize_file(image(n), options_.image_size);
            }
            std::ostringstream m;
            m << "module: web1\n"
              << "vm:\n  name: web1\n  domain_xml: " << (dir_ / "web1.xml").string() << "\n  shutdown_timeout: 5s\n"
              << "disks:\n  - path: " << image_path_in_module() << "\n    export: web1\n"
              << "nodes:\n"
              << "  - {name: hv1, address: 127.0.0.1, hypervisor_uri: \"" << options_.hypervisor_uri.at("hv1")
              << "\", control_port: " << control_ << "}\n"
              << "  - {name: hv2, address: 127.0.0.2, hypervisor_uri: \"" << options_.hypervisor_uri.at("hv2")
              << "\", control_port: " << control_ << "}\n"
              << "replication:\n  port: " << replication_ << "\n  timeout: 2s\n  connect_timeout: 2s\n"
              << "heartbeat:\n  interval: 200ms\n  timeout: 1s\n  paths:\n"
              << "    - {name: lan, port: " << heartbeat_ << ", addresses: {hv1: 127.0.0.1, hv2: 127.0.0.2}}\n"
              << "checkers:\n  - type: vm\n    interval: " << options_.checker_interval << "\n"
              << "restart:\n  attempts: " << options_.restart_attempts << "\n  window: 1h\n"
              << "health_check:\n  port: " << health_ << "\n";
            if (options_.witness && options_.etcd) {
                m << "witness:\n  type: etcd\n  endpoints: [\"127.0.0.1:" << witness_port_ << "\"]\n  lease: "
                  << options_.witness_lease << "\n";
            } else if (options_.witness) {
                m << "witness:\n  endpoints: [\"127.0.0.1:" << witness_port_ << "\"]\n  name: witness1\n  lease: "
                  << options_.witness_lease << "\n";
            }
            auto suffix = options_.module_suffix.find(n);
            std::ofstream(d / "modules/web1.yaml") << m.str() << (suffix != options_.module_suffix.end() ? suffix->second : "");
            const fs::path ca = fs::exists(d / "ca.pem") ? d / "ca.pem" : dir_ / "certs/ca.pem";
            std::ofstream(d / "vmha.yaml")
                << "node: " << n << "\nstate_dir: " << (d / "state").string() << "\nrun_dir: " << (d / "run").string()
                << "\nmodules_dir: " << (d / "modules").string() << "\nadmin_socket: " << (d / "run/admin.sock").string()
                << "\ntls: {ca: " << ca.string() << ", cert: " << (dir_ / "certs" / (std::string(n) + ".pem")).string()
                << ", key: " << (dir_ / "certs" / (std::string(n) + ".key")).string() << "}\nlog:\n  level: debug\n";
        }
    }

    ClusterOptions options_;
    TempDir dir_;
    std::uint16_t control_ = 0, replication_ = 0, heartbeat_ = 0, health_ = 0;
    std::map<std::string, pid_t> pids_;
    std::uint16_t witness_port_ = 0;
    pid_t witness_pid_ = -1;
    std::uint16_t etcd_peer_port_ = 0;
};

}  // namespace vmhad_test
