// vmhad with a real QEMU guest (software emulation) under a libvirtd owned by the test, on
// node hv1; node hv2 uses libvirt's test:///default driver. The guest's disk is an NBD disk on
// hv1's imagesyncd, replicated to hv2's. Checks: the VM is defined with its NBD disk and runs
// (its writes reach both nodes' images); a vmhad restart leaves the guest's I/O untouched and
// re-attaches to the same imagesyncd; `virsh destroy` is detected through events and the VM is
// restarted; once the restart attempts are used up, the module fails over to hv2.
#include <sys/stat.h>

#include "cluster.h"

namespace vmhad_test {
namespace {

// The number n of the guest's last "VMHA-GUEST-WRITE n" in the image's first sector; 0 if none.
long guest_write_counter(const fs::path& image) {
    std::ifstream in(image, std::ios::binary);
    std::string sector(512, '\0');
    in.read(sector.data(), 512);
    const std::string marker = "VMHA-GUEST-WRITE ";
    if (sector.compare(0, marker.size(), marker) != 0) return 0;
    return std::strtol(sector.c_str() + marker.size(), nullptr, 10);
}

std::size_t count(const std::string& text, const std::string& what) {
    std::size_t n = 0;
    for (auto pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1)) ++n;
    return n;
}

class VmhadLibvirt : public ::testing::Test {
protected:
    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "needs root: it starts its own libvirtd and mount namespaces";
        char tmpl[] = "/tmp/vmha-lv-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        aux_ = tmpl;
        auto guest = run_tool({std::string(TOOLS_DIR) + "/tiny-guest.sh", (aux_ / "guest").string()}, aux_, 900s);
        ASSERT_EQ(guest.exit_code, 0) << guest.output;
        auto lv = run_tool({std::string(TOOLS_DIR) + "/private-libvirtd.sh", "start", (aux_ / "lv").string()}, aux_, 120s);
        libvirtd_ = true;
        ASSERT_EQ(lv.exit_code, 0) << lv.output;
        uri_ = lv.output.substr(0, lv.output.find('\n'));
    }
    void TearDown() override {
        cluster_.reset();  // vmhad and imagesyncd first
        if (libvirtd_) {
            auto r = run_tool({std::string(TOOLS_DIR) + "/private-libvirtd.sh", "stop", (aux_ / "lv").string()}, aux_, 120s);
            EXPECT_EQ(r.exit_code, 0) << r.output;
        }
        if (HasFailure()) {
            std::fprintf(stderr, "---- serial console ----\n%s\n", read_file(aux_ / "serial.log").c_str());
            std::fprintf(stderr, "kept %s (libvirtd and QEMU logs in lv/)\n", aux_.c_str());
        } else if (!aux_.empty()) {
            std::error_code ignored;
            fs::remove_all(aux_, ignored);
        }
    }

    std::string domain_xml() const {
        const std::string guest = (aux_ / "guest").string();
        return "<domain type='qemu'>\n  <name>web1</name>\n  <memory unit='MiB'>256</memory>\n  <vcpu>1</vcpu>\n"
               "  <os><type arch='x86_64' machine='pc'>hvm</type>\n"
               "    <kernel>" + guest + "/vmlinuz</kernel><initrd>" + guest + "/initrd.img</initrd>\n"
               "    <cmdline>console=ttyS0 panic=-1 quiet</cmdline></os>\n"
               "  <on_crash>destroy</on_crash>\n  <devices>\n"
               "    <disk type='file' device='disk'>\n      <driver name='qemu' type='raw'/>\n"
               "      <source file='@IMAGE@'/>\n      <target dev='vda' bus='virtio'/>\n    </disk>\n"
               "    <serial type='file'><source path='" + (aux_ / "serial.log").string() + "' append='on'/></serial>\n"
               "    <memballoon model='none'/>\n  </devices>\n</domain>\n";
    }
    ToolResult virsh(std::vector<std::string> args) {
        std::vector<std::string> argv{"virsh", "-c", uri_};
        argv.insert(argv.end(), args.begin(), args.end());
        return run_tool(argv, aux_, 60s);
    }
    std::string serial() const { return read_file(aux_ / "serial.log"); }

    fs::path aux_;
    std::string uri_;
    bool libvirtd_ = false;
    std::unique_ptr<Cluster> cluster_;
};

TEST_F(VmhadLibvirt, RunsTheGuestOnNbdSurvivesVmhadRestartsRestartsItThenFailsOver) {
    ClusterOptions o;
    o.hypervisor_uri["hv1"] = uri_;
    o.domain_xml = domain_xml();
    o.restart_attempts = 2;
    cluster_ = std::make_unique<Cluster>(o);
    Cluster& c = *cluster_;
    for (const char* n : {"hv1", "hv2"}) c.start_vmhad(n);
    for (const char* n : {"hv1", "hv2"}) ASSERT_TRUE(c.wait_admin(n));
    for (const char* n : {"hv1", "hv2"}) ASSERT_EQ(c.run_vmha(n, {"start", "web1"}).exit_code, 0);
    ASSERT_TRUE(c.wait_state("hv1", "PRIM", 120s));

    // The domain runs with its disk on imagesyncd's NBD socket; the guest's writes reach both
    // nodes' images (synchronous replication).
    auto xml = virsh({"dumpxml", "web1"});
    ASSERT_EQ(xml.exit_code, 0) << xml.output;
    EXPECT_NE(xml.output.find("protocol='nbd'"), std::string::npos) << xml.output;
    EXPECT_NE(xml.output.find((c.node_dir("hv1") / "run/web1/nbd.sock").string()), std::string::npos) << xml.output;
    EXPECT_NE(xml.output.find("error_policy='stop'"), std::string::npos);
    ASSERT_TRUE(poll_until(120s, [&] { return guest_write_counter(c.image("hv1")) >= 2; })) << serial();
    ASSERT_TRUE(poll_until(30s, [&] { return guest_write_counter(c.image("hv2")) >= 2; }))
        << "hv2's copy does not follow";
    auto autostart = virsh({"dominfo", "web1"});
    EXPECT_NE(autostart.output.find("Autostart:      disable"), std::string::npos) << autostart.output;

    // vmhad restart: the guest keeps writing while vmhad is away and after; same imagesyncd.
    const pid_t imagesyncd = c.imagesyncd_pid("hv1");
    c.kill_vmhad("hv1", SIGTERM);
    const long during = guest_write_counter(c.image("hv1"));
    ASSERT_TRUE(poll_until(30s, [&] { return guest_write_counter(c.image("hv1")) >= during + 2; }))
        << "the guest stopped writing while vmhad was away";
    c.start_vmhad("hv1");
    ASSERT_TRUE(c.wait_admin("hv1"));
    ASSERT_TRUE(c.wait_state("hv1", "PRIM", 60s));
    EXPECT_EQ(c.imagesyncd_pid("hv1"), imagesyncd);
    EXPECT_EQ(c.module_status("hv1")["imagesyncd"]["pid"], imagesyncd);
    const long after = guest_write_counter(c.image("hv1"));
    ASSERT_TRUE(poll_until(30s, [&] { return guest_write_counter(c.image("hv1")) >= after + 2; }));
    EXPECT_EQ(count(serial(), "VMHA-GUEST-READY"), 1u) << "the guest was restarted";
    EXPECT_EQ(serial().find("VMHA-GUEST-WRITE-FAILED"), std::string::npos);

    // `virsh destroy`: detected, restarted here, twice (restart.attempts = 2).
    for (unsigned attempt = 1; attempt <= 2; ++attempt) {
        ASSERT_EQ(virsh({"destroy", "web1"}).exit_code, 0);
        ASSERT_TRUE(poll_until(120s, [&] { return count(serial(), "VMHA-GUEST-READY") == attempt + 1; }))
            << "not restarted after destroy #" << attempt << "; status " << c.module_status("hv1").dump();
        ASSERT_TRUE(poll_until(30s, [&] {
            auto s = c.module_status("hv1");
            return s.is_object() && s["restarts"]["used"] == attempt && s["state"] == "PRIM";
        })) << c.module_status("hv1").dump();
    }

    // A third destroy: no restart left; the module fails over to hv2, UpToDate and in sync.
    ASSERT_EQ(virsh({"destroy", "web1"}).exit_code, 0);
    ASSERT_TRUE(c.wait_state("hv2", "PRIM", 120s)) << c.module_status("hv1").dump();
    // hv1 gave up on running the VM (WAIT, unfit) but still receives hv2's writes.
    auto s1 = c.module_status("hv1");
    EXPECT_EQ(s1["state"], "WAIT");
    EXPECT_NE(s1.value("reason", "").find("no restart is left"), std::string::npos) << s1.dump();
    EXPECT_TRUE(poll_until(30s, [&] { return c.module_status("hv1")["replication"]["connection"] == "connected"; }))
        << c.module_status("hv1").dump();
    EXPECT_EQ(count(serial(), "VMHA-GUEST-READY"), 3u);
    EXPECT_EQ(c.http("hv2", "/health/web1"), 200);
    EXPECT_EQ(c.http("hv1", "/health/web1"), 503);
    auto st = virsh({"domstate", "web1"});
    EXPECT_NE(st.output.find("shut off"), std::string::npos) << st.output;
}

}  // namespace
}  // namespace vmhad_test
