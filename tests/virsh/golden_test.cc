// Golden-output test: vmha-virsh against the real virsh 9.0, on the same QEMU domains of a
// libvirtd owned by the test (tests/tools/private-libvirtd.sh). Domains: web-run (running, two
// disks), db-paused (paused), store-off (shut off; file, block, network and cdrom disks, one
// without a source) and Titled (shut off, a title with non-ASCII characters, a capital to check
// the case-insensitive sort), each the VM of one module on node hv1, whose peer hv2's hypervisor
// cannot be reached; a module whose domain is defined nowhere; later, a domain that no module
// names. For every command both tools run and stdout, stderr and the exit status must be equal
// byte for byte (a running domain's "CPU time:" line, which moves between the two runs, aside).
//
// Runs as one ctest test (one libvirtd and two TCG guests for all the checks).
#include <gtest/gtest.h>
#include <unistd.h>

#include "run.h"

namespace virsh_test {
namespace {

using namespace std::chrono_literals;

const std::string vmha_virsh = VMHA_VIRSH_PATH;
const std::string tools = TOOLS_DIR;

class Golden : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        if (::geteuid() != 0) {
            skip_ = "needs root: it starts its own libvirtd";
            return;
        }
        for (const char* p : {"virsh", "qemu-system-x86_64"}) {
            if (!have_program(p)) {
                skip_ = std::string(p) + " is not installed (tests/tools/install-deps.sh)";
                return;
            }
        }
        // Both tools' sentences in English (virsh translates its own; vmha-virsh does not).
        ::unsetenv("LANGUAGE");
        if (const char* all = std::getenv("LC_ALL"); all != nullptr && *all != '\0')
            ::setenv("LC_ALL", "C.UTF-8", 1);
        ::setenv("LC_MESSAGES", "C", 1);
        char tmpl[] = "/tmp/vmha-virsh-XXXXXX";
        if (::mkdtemp(tmpl) == nullptr) {
            setup_error_ = "mkdtemp failed";
            return;
        }
        aux_ = tmpl;
        auto guest = run({tools + "/tiny-guest.sh", (aux_ / "guest").string()}, aux_, 900s);
        if (guest.exit_code != 0) {
            setup_error_ = "tiny-guest.sh failed: " + guest.err;
            return;
        }
        auto lv =
            run({tools + "/private-libvirtd.sh", "start", (aux_ / "lv").string()}, aux_, 120s);
        libvirtd_ = true;
        if (lv.exit_code != 0) {
            setup_error_ = "private-libvirtd.sh failed: " + lv.err;
            return;
        }
        uri_ = lv.out.substr(0, lv.out.find('\n'));
        unreachable_uri_ = "qemu:///system?socket=" + (aux_ / "hv2-libvirt-sock").string();

        auto extra_disk = [&](const std::string& file, const std::string& dev) {
            make_image(file);
            return "<disk type='file' device='disk'><driver name='qemu' type='raw'/><source "
                   "file='" +
                   (aux_ / file).string() + "'/><target dev='" + dev + "' bus='virtio'/></disk>\n";
        };
        std::string store_disks =
            extra_disk("store-b.img", "vdb") +
            "<disk type='block' device='disk'><source dev='/dev/null'/><target dev='vdc' "
            "bus='virtio'/></disk>\n"
            "<disk type='network' device='disk'><source protocol='nbd' name='store-export'>"
            "<host transport='unix' socket='" +
            (aux_ / "nbd.sock").string() +
            "'/></source>"
            "<target dev='vdd' bus='virtio'/></disk>\n"
            "<disk type='file' device='cdrom'><target dev='hdc' bus='ide'/><readonly/></disk>\n";
        define("web-run", "", extra_disk("web-run-data.img", "vdb"));
        define("db-paused", "", "");
        define("store-off", "", store_disks);
        define("Titled", "<title>Ünïcode — title\twith a tab</title>", "");
        for (const auto& [what, args] :
             std::vector<std::pair<std::string, std::vector<std::string>>>{
                 {"start web-run", {"start", "web-run"}},
                 {"start db-paused", {"start", "db-paused"}},
                 {"suspend db-paused", {"suspend", "db-paused"}}}) {
            auto r = virsh(args);
            if (r.exit_code != 0) {
                setup_error_ = what + " failed: " + r.err;
                return;
            }
        }
        write_config("vmha.yaml", unreachable_uri_);
        // The same libvirtd under a second URI stands for a peer where the VMs run too.
        write_config("both.yaml", "qemu+unix:///system?socket=" +
                                      (aux_ / "lv/run/libvirt/libvirt-sock").string());
    }

    static void TearDownTestSuite() {
        if (libvirtd_) {
            auto r =
                run({tools + "/private-libvirtd.sh", "stop", (aux_ / "lv").string()}, aux_, 120s);
            if (r.exit_code != 0)
                std::fprintf(stderr, "private-libvirtd.sh stop: %s\n", r.err.c_str());
        }
        if (failed_) {
            std::fprintf(stderr, "kept %s (libvirtd and QEMU logs in lv/)\n", aux_.c_str());
        } else if (!aux_.empty()) {
            std::error_code ignored;
            fs::remove_all(aux_, ignored);
        }
    }

    void SetUp() override {
        if (!skip_.empty()) GTEST_SKIP() << skip_;
        ASSERT_TRUE(setup_error_.empty()) << setup_error_;
    }
    void TearDown() override {
        if (HasFailure()) failed_ = true;
    }

    static void make_image(const std::string& file) {
        std::ofstream(aux_ / file).close();
        fs::resize_file(aux_ / file, 16u << 20);
    }

    static void define(const std::string& name, const std::string& top, const std::string& disks) {
        make_image(name + ".img");
        const std::string guest = (aux_ / "guest").string();
        const std::string xml =
            "<domain type='qemu'>\n  <name>" + name + "</name>\n" + top +
            "  <memory unit='MiB'>128</memory>\n  <vcpu>1</vcpu>\n"
            "  <os><type arch='x86_64' machine='pc'>hvm</type>\n"
            "    <kernel>" +
            guest + "/vmlinuz</kernel><initrd>" + guest +
            "/initrd.img</initrd>\n"
            "    <cmdline>console=ttyS0 panic=-1 quiet</cmdline></os>\n"
            "  <on_crash>destroy</on_crash>\n  <devices>\n"
            "    <disk type='file' device='disk'><driver name='qemu' type='raw'/>"
            "<source file='" +
            (aux_ / (name + ".img")).string() + "'/><target dev='vda' bus='virtio'/></disk>\n" +
            disks + "    <memballoon model='none'/>\n  </devices>\n</domain>\n";
        std::ofstream(aux_ / (name + ".xml")) << xml;
        auto r = virsh({"define", (aux_ / (name + ".xml")).string()});
        if (r.exit_code != 0) setup_error_ += "define " + name + ": " + r.err;
    }

    // Node hv1 with a module per HA domain (and "ghost", defined nowhere); hv2 at `peer_uri`.
    static void write_config(const std::string& node_file, const std::string& peer_uri) {
        const fs::path modules = aux_ / (node_file + ".modules");
        fs::create_directories(modules);
        std::ofstream(aux_ / node_file)
            << "node: hv1\nstate_dir: " << (aux_ / "state").string()
            << "\nrun_dir: " << (aux_ / "run").string() << "\nmodules_dir: " << modules.string()
            << "\nadmin_socket: " << (aux_ / "no-vmhad.sock").string() << "\n";
        int port = 7900;
        for (const std::string vm : {"web-run", "db-paused", "store-off", "Titled", "ghost"}) {
            port += 10;
            std::ofstream(modules / ("m-" + vm + ".yaml"))
                << "module: m-" << vm << "\nvm:\n  name: " << vm
                << "\n  domain_xml: " << (aux_ / (vm + ".xml")).string()
                << "\ndisks:\n  - path: " << (aux_ / (vm + ".img")).string()
                << "\nnodes:\n  - {name: hv1, address: 127.0.0.1, hypervisor_uri: \"" << uri_
                << "\"}\n"
                << "  - {name: hv2, address: 127.0.0.2, hypervisor_uri: \"" << peer_uri << "\"}\n"
                << "replication:\n  port: " << port << "\nheartbeat:\n  paths:\n"
                << "    - {name: lan, port: " << port + 1
                << ", addresses: {hv1: 127.0.0.1, hv2: 127.0.0.2}}\n";
        }
    }

    static Output virsh(std::vector<std::string> args) {
        std::vector<std::string> argv{"virsh", "-c", uri_};
        argv.insert(argv.end(), args.begin(), args.end());
        return run(argv, aux_, 60s);
    }
    static Output ours(std::vector<std::string> args, const std::string& node_file = "vmha.yaml") {
        std::vector<std::string> argv{vmha_virsh, "--config", (aux_ / node_file).string()};
        argv.insert(argv.end(), args.begin(), args.end());
        return run(argv, aux_, 60s);
    }

    // virsh's global options go before the command, ours too: `global` is for both.
    void expect_same(const std::vector<std::string>& args, const std::string& mask = "") {
        const Output a = virsh(args);
        const Output b = ours(args);
        std::string what;
        for (const auto& w : args) what += " " + w;
        const std::string out_a = mask.empty() ? a.out : without_lines(a.out, mask);
        const std::string out_b = mask.empty() ? b.out : without_lines(b.out, mask);
        EXPECT_EQ(out_a, out_b) << "stdout of" << what << "\nvirsh:\n"
                                << a << "\nvmha-virsh:\n"
                                << b;
        EXPECT_EQ(a.err, b.err) << "stderr of" << what;
        EXPECT_EQ(a.exit_code, b.exit_code) << "exit status of" << what;
    }

    static inline std::string skip_, setup_error_, uri_, unreachable_uri_;
    static inline fs::path aux_;
    static inline bool libvirtd_ = false, failed_ = false;
};

std::vector<std::vector<std::string>> with_quiet(std::vector<std::vector<std::string>> commands) {
    auto all = commands;
    for (auto c : commands) {
        c.insert(c.begin(), "-q");
        all.push_back(c);
    }
    return all;
}

TEST_F(Golden, ListWithEveryFlag) {
    for (const auto& args : with_quiet({{"list"},
                                        {"list", "--all"},
                                        {"list", "--inactive"},
                                        {"list", "--all", "--name"},
                                        {"list", "--all", "--uuid"},
                                        {"list", "--all", "--id"},
                                        {"list", "--id"},
                                        {"list", "--name", "--uuid", "--id", "--all"},
                                        {"list", "--state-running"},
                                        {"list", "--state-paused"},
                                        {"list", "--state-shutoff"},
                                        {"list", "--state-other"},
                                        {"list", "--all", "--state-running", "--state-paused"},
                                        {"list", "--all", "--title"},
                                        {"list", "--title"},
                                        {"list", "--all", "--title", "--uuid"},
                                        {"list", "--all", "--table"},
                                        {"list", "--all", "--persistent"},
                                        {"list", "--all", "--transient"},
                                        {"list", "--all", "--autostart"},
                                        {"list", "--all", "--no-autostart"},
                                        {"list", "--all", "--with-managed-save"},
                                        {"list", "--all", "--without-managed-save"},
                                        {"list", "--all", "--managed-save"},
                                        {"list", "--all", "--with-snapshot"},
                                        {"list", "--all", "--without-snapshot"},
                                        {"list", "--all", "--with-checkpoint"},
                                        {"list", "--all", "--without-checkpoint"},
                                        {"list", "--inactive", "--name"},
                                        {"list", "--state-shutoff", "--uuid"},
                                        {"list", "--all", "--title", "--name"},
                                        // usage errors
                                        {"list", "--table", "--name"},
                                        {"list", "--table", "--uuid"},
                                        {"list", "--table", "--id"},
                                        {"list", "--al"},
                                        {"list", "extra"},
                                        {"list", "--all=yes"},
                                        {"list", "--all", "--all"}})) {
        expect_same(args);
    }
    expect_same({"-r", "list", "--all"});
    expect_same({"--readonly", "list", "--all", "--title"});
}

TEST_F(Golden, DomstateWithReason) {
    for (const std::string d : {"web-run", "db-paused", "store-off", "Titled"}) {
        for (const auto& args : with_quiet({{"domstate", d},
                                            {"domstate", "--reason", d},
                                            {"domstate", d, "--reason"},
                                            {"domstate", "--domain=" + d},
                                            {"domstate", "--domain", d, "--reason"}})) {
            expect_same(args);
        }
    }
    // By id and by UUID, as virsh looks domains up.
    expect_same({"domstate", "--reason", "1"});
    expect_same({"domstate", "--reason", "2"});
    const std::string uuid = virsh({"domuuid", "store-off"}).out.substr(0, 36);
    expect_same({"domstate", "--reason", uuid});
    for (const auto& args :
         std::vector<std::vector<std::string>>{{"domstate", "nosuch"},
                                               {"domstate"},
                                               {"domstate", "--domain"},
                                               {"domstate", "a", "b"},
                                               {"domstate", "web-run", "--reason", "--reason"},
                                               {"domstate", "--reason=1", "web-run"},
                                               {"domstate", "99"},
                                               {"-q", "domstate", "nosuch"}}) {
        expect_same(args);
    }
}

TEST_F(Golden, Dominfo) {
    // A running domain's CPU time moves between the two runs; a paused one's does not.
    for (const auto& args : with_quiet({{"dominfo", "web-run"}, {"dominfo", "1"}}))
        expect_same(args, "CPU time:");
    for (const auto& args : with_quiet({{"dominfo", "db-paused"},
                                        {"dominfo", "store-off"},
                                        {"dominfo", "Titled"},
                                        {"dominfo", "nosuch"},
                                        {"dominfo"}})) {
        expect_same(args);
    }
}

TEST_F(Golden, DomblklistWithDetails) {
    for (const std::string d : {"web-run", "db-paused", "store-off", "Titled"}) {
        for (const auto& args : with_quiet({{"domblklist", d},
                                            {"domblklist", "--details", d},
                                            {"domblklist", d, "--details", "--inactive"},
                                            {"domblklist", "--inactive", d}})) {
            expect_same(args);
        }
    }
    expect_same({"domblklist", "nosuch"});
    expect_same({"domblklist", "--details"});
}

TEST_F(Golden, DomidDomuuidDomname) {
    const std::string uuid = virsh({"domuuid", "web-run"}).out.substr(0, 36);
    for (const auto& args : with_quiet({{"domid", "web-run"},
                                        {"domid", "db-paused"},
                                        {"domid", "store-off"},
                                        {"domid", uuid},
                                        {"domid", "1"},
                                        {"domuuid", "web-run"},
                                        {"domuuid", "1"},
                                        {"domuuid", "Titled"},
                                        {"domuuid", uuid},
                                        {"domname", "1"},
                                        {"domname", "2"},
                                        {"domname", uuid},
                                        {"domname", "web-run"},
                                        {"domid", "nosuch"}})) {
        expect_same(args);
    }
}

TEST_F(Golden, UnknownCommandsAndGlobalOptionsAsVirsh) {
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"foo"}, {"foo", "web-run"}, {"--foo", "list"}, {"-x", "list"}, {"-c"}}) {
        expect_same(args);
    }
}

TEST_F(Golden, ADomainNoModuleNamesIsNeverShown) {
    const Output before = ours({"list", "--all", "--title"});
    ASSERT_EQ(before.exit_code, 0) << before;
    define("unmanaged", "", "");
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
    const Output v = virsh({"list", "--all", "--title"});
    EXPECT_NE(v.out.find("unmanaged"), std::string::npos) << v;
    const Output after = ours({"list", "--all", "--title"});
    EXPECT_EQ(after.out, before.out);
    EXPECT_EQ(after.err, "");
    for (const auto& cmd : {"domstate", "dominfo", "domblklist", "domid", "domuuid"}) {
        const Output r = ours({cmd, "unmanaged"});
        EXPECT_EQ(r.exit_code, 1) << r;
        EXPECT_EQ(r.out, "\n");
        EXPECT_EQ(r.err, "error: failed to get domain 'unmanaged'\n");
    }
    // The module whose domain is defined nowhere is not listed either.
    EXPECT_EQ(after.out.find("ghost"), std::string::npos) << after;
    EXPECT_EQ(virsh({"undefine", "unmanaged"}).exit_code, 0);
}

TEST_F(Golden, StateChangingCommandsAreRefusedAndChangeNothing) {
    const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
        {{"start", "Titled"}, "error: vmha-virsh is read-only: use 'vmha start m-Titled'\n"},
        {{"destroy", "web-run"}, "error: vmha-virsh is read-only: use 'vmha stop m-web-run'\n"},
        {{"shutdown", "--domain", "web-run"},
         "error: vmha-virsh is read-only: use 'vmha stop m-web-run'\n"},
        {{"reboot", "web-run"}, "error: vmha-virsh is read-only: use 'vmha restart m-web-run'\n"},
        {{"migrate", "web-run", "qemu+ssh://hv2/system"},
         "error: vmha-virsh is read-only: use 'vmha swap m-web-run'\n"},
        {{"resume", "db-paused"}, "error: vmha-virsh is read-only: use 'vmha start m-db-paused'\n"},
        {{"suspend", "web-run"}, "error: vmha-virsh is read-only: use 'vmha stop m-web-run'\n"},
        {{"start", "not-a-module"}, "error: vmha-virsh is read-only: use 'vmha start MODULE'\n"},
    };
    const Output before = virsh({"list", "--all"});
    for (const auto& [args, err] : cases) {
        const Output r = ours(args);
        EXPECT_EQ(r.exit_code, 1) << r;
        EXPECT_EQ(r.out, "");
        EXPECT_EQ(r.err, err);
    }
    const Output undefine = ours({"undefine", "store-off"});
    EXPECT_EQ(undefine.exit_code, 1);
    EXPECT_NE(undefine.err.find("vmha-virsh is read-only"), std::string::npos) << undefine;
    EXPECT_EQ(virsh({"list", "--all"}).out, before.out) << "a refused command changed something";
}

TEST_F(Golden, ConnectRestrictsToOneHypervisor) {
    const Output all = virsh({"list", "--all"});
    const Output mine = ours({"-c", uri_, "list", "--all"});
    EXPECT_EQ(mine.out, all.out);
    EXPECT_EQ(mine.exit_code, 0);
    const Output mine_long = ours({"--connect=" + uri_, "-q", "domstate", "--reason", "db-paused"});
    EXPECT_EQ(mine_long.out, "paused (user)\n") << mine_long;
    // An unreachable -c URI fails as virsh does, with libvirt's sentence.
    const Output v = run({"virsh", "-c", unreachable_uri_, "list"}, aux_, 60s);
    const Output o = ours({"-c", unreachable_uri_, "list"});
    EXPECT_EQ(o.out, v.out);
    EXPECT_EQ(o.err, v.err);
    EXPECT_EQ(o.exit_code, 1);
    EXPECT_EQ(v.exit_code, 1);
}

TEST_F(Golden, HaStatusFlagsADomainActiveOnBothNodes) {
    // both.yaml: hv2's URI reaches the same libvirtd, so web-run and db-paused are active "on
    // both nodes". list still shows each domain once, as virsh does.
    const Output list = ours({"list", "--all"}, "both.yaml");
    EXPECT_EQ(list.out, virsh({"list", "--all"}).out);
    EXPECT_EQ(list.err, "");
    const Output ha = ours({"ha-status"}, "both.yaml");
    EXPECT_EQ(ha.exit_code, 1) << ha;
    EXPECT_NE(
        ha.err.find(
            "error: domain 'web-run' of module 'm-web-run' is active on several nodes: hv1, hv2"),
        std::string::npos)
        << ha;
    EXPECT_NE(
        ha.err.find("error: domain 'db-paused' of module 'm-db-paused' is active on several nodes"),
        std::string::npos)
        << ha;
    EXPECT_NE(ha.err.find("warning: vmhad is not running"), std::string::npos) << ha;
    // The normal setup: hv2 unreachable is a warning, not an error.
    const Output ok = ours({"ha-status"});
    EXPECT_EQ(ok.exit_code, 0) << ok;
    EXPECT_NE(ok.err.find("warning: node 'hv2': cannot reach the hypervisor at '" +
                          unreachable_uri_ + "'"),
              std::string::npos)
        << ok;
    EXPECT_NE(ok.out.find(" m-ghost       ghost       -      undefined   vmhad not running"),
              std::string::npos)
        << ok;
    EXPECT_NE(ok.out.find(" m-web-run     web-run     hv1    running     vmhad not running"),
              std::string::npos)
        << ok;
}

}  // namespace
}  // namespace virsh_test
