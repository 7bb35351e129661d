// vmha-virsh against libvirt's test:///default driver (no daemon, no root): the same goldens as
// with QEMU, quickly, plus what only the test driver shows (a security label), and the HA
// columns filled from a stand-in vmhad on a private admin socket.
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>
#include <sys/un.h>

#include "run.h"

namespace virsh_test {
namespace {

using namespace std::chrono_literals;

class TestDriver : public ::testing::Test {
  protected:
    void SetUp() override {
        if (!have_program("virsh"))
            GTEST_SKIP() << "virsh is not installed (tests/tools/install-deps.sh)";
        ::unsetenv("LANGUAGE");  // both tools' sentences in English
        if (const char* all = std::getenv("LC_ALL"); all != nullptr && *all != '\0')
            ::setenv("LC_ALL", "C.UTF-8", 1);
        ::setenv("LC_MESSAGES", "C", 1);
        char tmpl[] = "/tmp/vmha-virsh-td-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        fs::create_directories(dir_ / "modules");
        std::ofstream(dir_ / "vmha.yaml")
            << "node: hv1\nstate_dir: " << (dir_ / "state").string()
            << "\nrun_dir: " << dir_.string() << "\nmodules_dir: " << (dir_ / "modules").string()
            << "\nadmin_socket: " << (dir_ / "admin.sock").string() << "\n";
        // Both nodes on test:///default: one hypervisor, asked once.
        std::ofstream(dir_ / "modules/m-test.yaml")
            << "module: m-test\nvm:\n  name: test\n  domain_xml: /dev/null\ndisks:\n  - path: "
               "/var/lib/x/test.img\n"
            << "nodes:\n  - {name: hv1, address: 127.0.0.1, hypervisor_uri: \"test:///default\"}\n"
            << "  - {name: hv2, address: 127.0.0.2, hypervisor_uri: \"test:///default\"}\n"
            << "replication:\n  port: 7801\nheartbeat:\n  paths:\n"
            << "    - {name: lan, port: 7802, addresses: {hv1: 127.0.0.1, hv2: 127.0.0.2}}\n";
    }
    void TearDown() override {
        if (server_.joinable()) server_.join();
        std::error_code ignored;
        fs::remove_all(dir_, ignored);
    }

    Output virsh(std::vector<std::string> args) {
        args.insert(args.begin(), {"virsh", "-c", "test:///default"});
        return run(args, dir_, 60s);
    }
    Output ours(std::vector<std::string> args) {
        args.insert(args.begin(), {VMHA_VIRSH_PATH, "--config", (dir_ / "vmha.yaml").string()});
        return run(args, dir_, 60s);
    }
    void expect_same(const std::vector<std::string>& args, const std::string& mask = "") {
        const Output a = virsh(args);
        const Output b = ours(args);
        EXPECT_EQ(mask.empty() ? a.out : without_lines(a.out, mask),
                  mask.empty() ? b.out : without_lines(b.out, mask))
            << "\nvirsh:\n"
            << a << "\nvmha-virsh:\n"
            << b;
        EXPECT_EQ(a.err, b.err);
        EXPECT_EQ(a.exit_code, b.exit_code);
    }

    // A stand-in vmhad: answers one admin request on the node's admin socket with `result`.
    void serve_status_once(nlohmann::json result) {
        const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT_GE(fd, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        const std::string path = (dir_ / "admin.sock").string();
        std::memcpy(addr.sun_path, path.c_str(), path.size());
        ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
        ASSERT_EQ(::listen(fd, 1), 0);
        server_ = std::thread([fd, result] {
            const int c = ::accept(fd, nullptr, nullptr);
            if (c >= 0) {
                std::string line;
                char ch = 0;
                while (::read(c, &ch, 1) == 1 && ch != '\n') line += ch;
                const auto request = nlohmann::json::parse(line, nullptr, false);
                nlohmann::json reply = {{"version", 1}, {"ok", true}, {"result", result}};
                if (!request.is_object() || request.value("verb", "") != "status") {
                    reply = {{"version", 1},
                             {"ok", false},
                             {"code", "invalid_argument"},
                             {"error", "not status"}};
                }
                const std::string text = reply.dump() + "\n";
                (void)!::write(c, text.data(), text.size());
                ::close(c);
            }
            ::close(fd);
        });
    }

    fs::path dir_;
    std::thread server_;
};

TEST_F(TestDriver, SameAsVirsh) {
    for (const auto& args :
         std::vector<std::vector<std::string>>{{"list"},
                                               {"list", "--all"},
                                               {"-q", "list", "--all"},
                                               {"list", "--all", "--title"},
                                               {"list", "--name"},
                                               {"list", "--uuid"},
                                               {"list", "--state-paused"},
                                               {"domstate", "--reason", "test"},
                                               {"domstate", "1"},
                                               {"domblklist", "test"},
                                               {"domblklist", "--details", "test"},
                                               {"-q", "domblklist", "--details", "test"},
                                               {"domid", "test"},
                                               {"domuuid", "test"},
                                               {"domname", "1"},
                                               {"domstate", "nosuch"},
                                               {"dominfo"},
                                               {"list", "--bogus"},
                                               {"frobnicate"}}) {
        expect_same(args);
    }
    // The test driver's CPU time follows the clock; the security label is only here.
    expect_same({"dominfo", "test"}, "CPU time:");
    EXPECT_NE(ours({"dominfo", "test"}).out.find("Security label: libvirt-test (enforcing)\n"),
              std::string::npos);
}

TEST_F(TestDriver, HaColumnsFromVmhad) {
    serve_status_once(
        {{"node", "hv1"},
         {"modules",
          {{{"name", "m-test"},
            {"state", "PRIM"},
            {"data_state", "UpToDate"},
            {"peer", {{"node", "hv2"}, {"state", "SECOND"}, {"data_state", "UpToDate"}}}}}}});
    const Output r = ours({"list", "--all", "--ha"});
    EXPECT_EQ(r.exit_code, 0) << r;
    EXPECT_EQ(r.out,
              " Id   Name   State     Node   HA\n"
              "---------------------------------------------\n"
              " 1    test   running   hv1    PRIM UpToDate\n"
              "\n");
    EXPECT_EQ(r.err, "");
}

TEST_F(TestDriver, HaStatusWithAndWithoutVmhad) {
    Output r = ours({"ha-status"});
    EXPECT_EQ(r.exit_code, 0) << r;
    EXPECT_EQ(r.out,
              " Module   Domain   Node   State     HA                  Data   Peer\n"
              "---------------------------------------------------------------------\n"
              " m-test   test     hv1    running   vmhad not running   -      -\n"
              "\n");
    EXPECT_NE(r.err.find("warning: vmhad is not running: cannot ask '" +
                         (dir_ / "admin.sock").string() + "'"),
              std::string::npos)
        << r;

    serve_status_once(
        {{"node", "hv1"},
         {"modules",
          {{{"name", "m-test"},
            {"state", "SECOND"},
            {"data_state", "Outdated"},
            {"peer", {{"node", "hv2"}, {"state", "PRIM"}, {"data_state", "UpToDate"}}}}}}});
    r = ours({"-q", "ha-status", "test"});
    EXPECT_EQ(r.exit_code, 0) << r;
    EXPECT_EQ(r.out,
              " m-test   test   hv1   running   SECOND Outdated   Outdated   hv2 PRIM UpToDate\n");
    EXPECT_EQ(r.err, "");

    r = ours({"ha-status", "nosuch"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("error: failed to get domain 'nosuch'"), std::string::npos) << r;
}

TEST_F(TestDriver, ThePeersCopyWhenThisNodesHypervisorIsDown) {
    // hv1 (this node) cannot be reached; the domain is found on hv2 and shown from there.
    const std::string down = "qemu:///system?socket=" + (dir_ / "down.sock").string();
    std::ofstream(dir_ / "modules/m-test.yaml")
        << "module: m-test\nvm:\n  name: test\n  domain_xml: /dev/null\ndisks:\n  - path: "
           "/var/lib/x/test.img\n"
        << "nodes:\n  - {name: hv1, address: 127.0.0.1, hypervisor_uri: \"" << down << "\"}\n"
        << "  - {name: hv2, address: 127.0.0.2, hypervisor_uri: \"test:///default\"}\n"
        << "replication:\n  port: 7801\nheartbeat:\n  paths:\n"
        << "    - {name: lan, port: 7802, addresses: {hv1: 127.0.0.1, hv2: 127.0.0.2}}\n";
    expect_same({"list", "--all"});
    Output r = ours({"-q", "list", "--all", "--ha"});
    EXPECT_EQ(r.out, " 1   test   running   hv2   vmhad not running\n") << r;
    EXPECT_EQ(r.err, "");
    r = ours({"-q", "ha-status"});
    EXPECT_EQ(r.exit_code, 0) << r;
    EXPECT_NE(r.err.find("warning: node 'hv1': cannot reach the hypervisor at '" + down + "'"),
              std::string::npos)
        << r;
    // -c with the unreachable URI fails as virsh does.
    r = ours({"-c", down, "list"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.err.substr(0, 43), "error: failed to connect to the hypervisor\n") << r;
}

TEST_F(TestDriver, BadConfigIsAClearError) {
    const Output r =
        run({VMHA_VIRSH_PATH, "--config", (dir_ / "missing.yaml").string(), "list"}, dir_, 60s);
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.out, "");
    EXPECT_NE(r.err.find("error: " + (dir_ / "missing.yaml").string()), std::string::npos) << r;
}

TEST_F(TestDriver, HelpAndNoCommand) {
    Output r = ours({"--help"});
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_NE(r.out.find("domblklist DOMAIN [--inactive] [--details]"), std::string::npos);
    r = ours({});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("give a command"), std::string::npos);
}

}  // namespace
}  // namespace virsh_test
