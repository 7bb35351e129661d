// rewrite_domain_xml(): file disks of a module's domain become NBD disks served by imagesyncd.
#include <vmha/hypervisor/domain_xml.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include <gtest/gtest.h>

namespace vmha::hv {
namespace {

const char* const two_disk_domain = R"(<domain type='kvm'>
  <name>web1</name>
  <memory unit='MiB'>512</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' io='native' discard='unmap'/>
      <source file='/var/lib/vm/web1.img'/>
      <target dev='vda' bus='virtio'/>
      <boot order='1'/>
      <serial>WEB1-ROOT</serial>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/vm/web1-data.qcow2'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/iso/tools.iso'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
  </devices>
</domain>
)";

NbdDisk root_disk() {
    return NbdDisk{"/var/lib/vm/web1.img", "", "/run/imagesync/web1.sock", "web1", config::DiskFormat::raw};
}

NbdDisk data_disk() {
    return NbdDisk{"/var/lib/vm/web1-data.qcow2", "", "/run/imagesync/web1.sock", "web1-data",
                   config::DiskFormat::qcow2};
}

bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

// Runs virt-xml-validate on xml; empty when valid, else its output. nullopt when the tool is missing.
std::optional<std::string> validate(const std::string& xml) {
    if (std::system("command -v virt-xml-validate >/dev/null 2>&1") != 0) return std::nullopt;
    char path[] = "/tmp/vmha-domain-xml-XXXXXX";
    const int fd = mkstemp(path);
    if (fd < 0) return std::string("mkstemp failed");
    close(fd);
    std::ofstream(path) << xml;
    const std::string out = std::string(path) + ".out";
    const std::string cmd = "virt-xml-validate " + std::string(path) + " domain >" + out + " 2>&1";
    const int rc = std::system(cmd.c_str());
    std::ifstream in(out);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::filesystem::remove(path);
    std::filesystem::remove(out);
    if (WIFEXITED(rc) && WEXITSTATUS(rc) == 0) return std::string();
    return text.empty() ? std::string("virt-xml-validate failed") : text;
}

TEST(DomainXml, RewritesRawAndQcow2DisksMatchedByPath) {
    Result<std::string> xml = rewrite_domain_xml({"web1", two_disk_domain, {root_disk(), data_disk()}});
    ASSERT_TRUE(xml) << xml.error().message;
    const std::string& out = *xml;
    EXPECT_TRUE(contains(out, "<disk type=\"network\" device=\"disk\">")) << out;
    EXPECT_TRUE(contains(out, "<driver name=\"qemu\" type=\"raw\" discard=\"unmap\" cache=\"none\" "
                              "error_policy=\"stop\" rerror_policy=\"stop\"/>"))
        << out;
    EXPECT_TRUE(contains(out, "<source protocol=\"nbd\" name=\"web1\"><host transport=\"unix\" "
                              "socket=\"/run/imagesync/web1.sock\"/></source>"))
        << out;
    EXPECT_TRUE(contains(out, "<driver name=\"qemu\" type=\"qcow2\" cache=\"none\" error_policy=\"stop\" "
                              "rerror_policy=\"stop\"/>"))
        << out;
    EXPECT_TRUE(contains(out, "<source protocol=\"nbd\" name=\"web1-data\">")) << out;
    EXPECT_FALSE(contains(out, "web1.img")) << out;
    EXPECT_FALSE(contains(out, "web1-data.qcow2")) << out;
    EXPECT_FALSE(contains(out, "io=")) << out;
    // Kept: target, boot order, serial, address.
    EXPECT_TRUE(contains(out, "<target dev=\"vda\" bus=\"virtio\"/>")) << out;
    EXPECT_TRUE(contains(out, "<boot order=\"1\"/>")) << out;
    EXPECT_TRUE(contains(out, "<serial>WEB1-ROOT</serial>")) << out;
    EXPECT_TRUE(contains(out, "slot=\"0x05\"")) << out;
    // The cdrom is not replicated and stays a file disk.
    EXPECT_TRUE(contains(out, "<disk type=\"file\" device=\"cdrom\">")) << out;
    EXPECT_TRUE(contains(out, "<source file=\"/var/lib/iso/tools.iso\"/>")) << out;
}

TEST(DomainXml, MatchesByTargetWhenTargetIsSet) {
    NbdDisk by_target{"/elsewhere/ignored.img", "vdb", "/run/imagesync/web1.sock", "data",
                      config::DiskFormat::qcow2};
    Result<std::string> xml = rewrite_domain_xml({"web1", two_disk_domain, {by_target}});
    ASSERT_TRUE(xml) << xml.error().message;
    EXPECT_TRUE(contains(*xml, "<source protocol=\"nbd\" name=\"data\">")) << *xml;
    EXPECT_FALSE(contains(*xml, "web1-data.qcow2")) << *xml;
    // vda is untouched.
    EXPECT_TRUE(contains(*xml, "<source file=\"/var/lib/vm/web1.img\"/>")) << *xml;
    EXPECT_TRUE(contains(*xml, "io=\"native\"")) << *xml;
}

TEST(DomainXml, NoReplicatedDisksLeavesDisksAlone) {
    Result<std::string> xml = rewrite_domain_xml({"web1", two_disk_domain, {}});
    ASSERT_TRUE(xml) << xml.error().message;
    EXPECT_FALSE(contains(*xml, "network")) << *xml;
    EXPECT_TRUE(contains(*xml, "<source file=\"/var/lib/vm/web1.img\"/>")) << *xml;
}

TEST(DomainXml, GivesTheExistingUuidToADefinitionWithoutOne) {
    const std::string uuid = "ea6baade-5f4c-4ccb-a98d-a0d9f349be6b";
    Result<std::string> xml = rewrite_domain_xml({"web1", two_disk_domain, {}}, uuid);
    ASSERT_TRUE(xml) << xml.error().message;
    EXPECT_TRUE(contains(*xml, "<name>web1</name><uuid>" + uuid + "</uuid>")) << *xml;
    // A definition that names its UUID keeps it.
    const std::string own = R"(<domain type='qemu'><name>d</name><uuid>11111111-2222-3333-4444-555555555555</uuid><memory>65536</memory></domain>)";
    Result<std::string> kept = rewrite_domain_xml({"d", own, {}}, uuid);
    ASSERT_TRUE(kept) << kept.error().message;
    EXPECT_TRUE(contains(*kept, "11111111-2222-3333-4444-555555555555")) << *kept;
    EXPECT_FALSE(contains(*kept, uuid)) << *kept;
}

TEST(DomainXml, AddsADriverWhenTheDiskHasNone) {
    const std::string domain = R"(<domain type='qemu'><name>d</name><memory>65536</memory>
<os><type>hvm</type></os><devices><disk type='file'><source file='/img'/><target dev='vda' bus='virtio'/></disk></devices></domain>)";
    Result<std::string> xml =
        rewrite_domain_xml({"d", domain, {{"/img", "", "/s.sock", "e", config::DiskFormat::raw}}});
    ASSERT_TRUE(xml) << xml.error().message;
    EXPECT_TRUE(contains(*xml, "<disk type=\"network\" device=\"disk\"><driver name=\"qemu\" type=\"raw\" "
                               "cache=\"none\" error_policy=\"stop\" rerror_policy=\"stop\"/><source "
                               "protocol=\"nbd\" name=\"e\">"))
        << *xml;
}

TEST(DomainXml, MissingReplicatedDiskIsInvalidArgumentNamingIt) {
    NbdDisk missing{"/var/lib/vm/other.img", "", "/s.sock", "other", config::DiskFormat::raw};
    Result<std::string> xml = rewrite_domain_xml({"web1", two_disk_domain, {root_disk(), missing}});
    ASSERT_FALSE(xml);
    EXPECT_TRUE(xml.error().is(errc::invalid_argument));
    EXPECT_EQ(xml.error().message,
              "domain \"web1\": replicated disk image \"/var/lib/vm/other.img\" is not a <disk "
              "type='file'> of the domain XML");

    NbdDisk missing_target{"/x.img", "vdz", "/s.sock", "x", config::DiskFormat::raw};
    xml = rewrite_domain_xml({"web1", two_disk_domain, {missing_target}});
    ASSERT_FALSE(xml);
    EXPECT_TRUE(contains(xml.error().message, "target \"vdz\"")) << xml.error().message;
}

TEST(DomainXml, RefusesBadInput) {
    // The cdrom is a file disk but a network disk may not be matched twice.
    NbdDisk twice = root_disk();
    twice.export_name = "again";
    Result<std::string> xml = rewrite_domain_xml({"web1", two_disk_domain, {root_disk(), twice}});
    ASSERT_FALSE(xml);
    EXPECT_TRUE(xml.error().is(errc::invalid_argument));
    EXPECT_TRUE(contains(xml.error().message, "are the same <disk>")) << xml.error().message;

    xml = rewrite_domain_xml({"web2", two_disk_domain, {}});
    ASSERT_FALSE(xml);
    EXPECT_EQ(xml.error().message, "domain \"web2\": the domain XML names the domain \"web1\"");

    xml = rewrite_domain_xml({"web1", "<domain><name>web1</name>", {}});
    ASSERT_FALSE(xml);
    EXPECT_TRUE(xml.error().is(errc::invalid_argument));
    EXPECT_TRUE(contains(xml.error().message, "does not parse")) << xml.error().message;

    xml = rewrite_domain_xml({"web1", "<network><name>web1</name></network>", {}});
    ASSERT_FALSE(xml);
    EXPECT_TRUE(contains(xml.error().message, "<network>, not <domain>")) << xml.error().message;

    NbdDisk no_socket = root_disk();
    no_socket.nbd_socket.clear();
    xml = rewrite_domain_xml({"web1", two_disk_domain, {no_socket}});
    ASSERT_FALSE(xml);
    EXPECT_TRUE(xml.error().is(errc::invalid_argument));
}

TEST(DomainXml, ResultValidatesAgainstLibvirtSchema) {
    Result<std::string> xml = rewrite_domain_xml({"web1", two_disk_domain, {root_disk(), data_disk()}});
    ASSERT_TRUE(xml) << xml.error().message;
    std::optional<std::string> problems = validate(*xml);
    if (!problems) GTEST_SKIP() << "virt-xml-validate is not installed (libvirt-clients)";
    EXPECT_EQ(*problems, "") << *xml;
    // And the validator does reject something wrong, so the check above can fail.
    std::string broken = *xml;
    broken.replace(broken.find("protocol=\"nbd\""), 14, "protocol=\"xyz\"");
    std::optional<std::string> rejected = validate(broken);
    ASSERT_TRUE(rejected);
    EXPECT_NE(*rejected, "");
}

}  // namespace
}  // namespace vmha::hv
