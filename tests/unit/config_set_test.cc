// Checks across files: module names, disk paths, ports per node, the 32-module limit, node
// files; the shipped example configs; and load_node_setup() as the daemon uses it.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include <vmha/config/load.h>

using namespace vmha::config;
namespace fs = std::filesystem;

namespace {

struct Mod {
    std::string name;
    std::string disk;
    int port;
    std::string node_a = "hv1";
    std::string node_b = "hv2";
};

// Line 1 module, 2 vm, 3 disks, 4 nodes, 5 replication, 6 heartbeat, 7 witness.
std::string text(const Mod& m) {
    return fmt::format(
        "module: {0}\n"
        "vm: {{name: {0}, domain_xml: /etc/vmha/{0}.xml}}\n"
        "disks: [{{path: {1}}}]\n"
        "nodes: [{{name: {3}, address: 10.0.0.1}}, {{name: {4}, address: 10.0.0.2}}]\n"
        "replication: {{port: {2}}}\n"
        "heartbeat: {{paths: [{{port: {5}, addresses: {{{3}: 10.0.0.1, {4}: 10.0.0.2}}}}]}}\n"
        "witness: {{endpoints: [\"10.0.0.3:7950\"]}}\n",
        m.name, m.disk, m.port, m.node_a, m.node_b, m.port + 1);
}

std::vector<std::string> set_errors(const std::vector<std::pair<std::string, std::string>>& files) {
    Findings findings;
    std::vector<LoadedFile> loaded;
    for (const auto& [name, body] : files) loaded.push_back(parse_file(name, body, findings));
    for (const auto& f : findings.items) {
        EXPECT_NE(f.severity, Severity::error) << "per-file error: " << f.to_string();
    }
    findings.items.clear();
    check_set(loaded, findings);
    std::vector<std::string> out;
    for (const auto& f : findings.items) out.push_back(f.to_string());
    return out;
}

using Lines = std::vector<std::string>;

}  // namespace

TEST(ConfigSet, DistinctModulesAreFine) {
    EXPECT_EQ(set_errors({{"a.yaml", text({"a", "/srv/a.raw", 7801})},
                          {"b.yaml", text({"b", "/srv/b.raw", 7811})}}),
              (Lines{}));
}

TEST(ConfigSet, SameModuleNameTwice) {
    EXPECT_EQ(set_errors({{"a.yaml", text({"a", "/srv/a.raw", 7801})},
                          {"a2.yaml", text({"a", "/srv/b.raw", 7811})}}),
              (Lines{"a2.yaml:1:9: module: module \"a\" is already defined at a.yaml:1:9"}));
}

TEST(ConfigSet, DiskUsedByTwoModules) {
    EXPECT_EQ(set_errors({{"a.yaml", text({"a", "/srv/shared.raw", 7801})},
                          {"b.yaml", text({"b", "/srv/shared.raw", 7811})}}),
              (Lines{"b.yaml:3:16: disks[0].path: disk \"/srv/shared.raw\" is also replicated by module "
                    "\"a\" (at a.yaml:3:16); a disk belongs to one module"}));
}

TEST(ConfigSet, PortUsedByTwoModulesOnOneNode) {
    EXPECT_EQ(set_errors({{"a.yaml", text({"a", "/srv/a.raw", 7801})},
                          {"b.yaml", text({"b", "/srv/b.raw", 7801, "hv1", "hv3"})}}),
              (Lines{"b.yaml:5:21: replication.port: port 7801 is also used by module \"a\" "
                    "(replication.port at a.yaml:5:21) on node \"hv1\"",
                    "b.yaml:6:28: heartbeat.paths[0].port: port 7802 is also used by module \"a\" "
                    "(heartbeat.paths[0].port at a.yaml:6:28) on node \"hv1\""}));
}

TEST(ConfigSet, SamePortOnDisjointNodePairsIsFine) {
    EXPECT_EQ(set_errors({{"a.yaml", text({"a", "/srv/a.raw", 7801})},
                          {"b.yaml", text({"b", "/srv/b.raw", 7801, "hv3", "hv4"})}}),
              (Lines{}));
}

TEST(ConfigSet, AtMost32ModulesPerNode) {
    std::vector<std::pair<std::string, std::string>> files;
    for (int i = 0; i < 33; ++i) {
        const std::string name = fmt::format("m{}", i);
        // Each module pairs hv1 with its own second node, so only hv1 exceeds the limit.
        files.emplace_back(name + ".yaml", text({name, "/srv/" + name + ".raw", 7000 + 2 * i,
                                                 "hv1", fmt::format("peer{}", i)}));
    }
    EXPECT_EQ(set_errors(files),
              (Lines{"m32.yaml:4:16: nodes: node \"hv1\" is named by more than 32 modules; a node "
                    "runs at most 32 modules"}));
    files.pop_back();
    EXPECT_EQ(set_errors(files), (Lines{}));
}

TEST(ConfigSet, ModulesMustNameTheNodeOfTheNodeFile) {
    EXPECT_EQ(set_errors({{"vmha.yaml", "node: hv9\ntls: {ca: /c, cert: /c, key: /k}\n"},
                          {"a.yaml", text({"a", "/srv/a.raw", 7801})}}),
              (Lines{"a.yaml:4:16: nodes: module \"a\" runs on \"hv1\" and \"hv2\", not on this "
                    "node \"hv9\" (vmha.yaml:1:7)"}));
}

TEST(ConfigSet, TwoNodeFilesWithOneName) {
    EXPECT_EQ(set_errors({{"n1.yaml", "node: hv1\ntls: {ca: /c, cert: /c, key: /k}\n"},
                          {"n2.yaml", "node: hv1\ntls: {ca: /c, cert: /c, key: /k}\n"}}),
              (Lines{"n2.yaml:1:7: node: node \"hv1\" is already defined at n1.yaml:1:7"}));
}

TEST(ShippedConfigs, EveryExampleFileIsValidAlone) {
    for (const auto& entry : fs::directory_iterator(VMHA_CONFIGS_DIR)) {
        if (entry.path().extension() != ".yaml") continue;
        Findings findings;
        auto f = load_file(entry.path().string(), findings);
        EXPECT_TRUE(f.valid) << entry.path();
        for (const auto& item : findings.items) ADD_FAILURE() << item.to_string();
    }
}

TEST(ShippedConfigs, AllTogetherAreValid) {
    Findings findings;
    std::vector<LoadedFile> files;
    for (const auto& entry : fs::directory_iterator(VMHA_CONFIGS_DIR)) {
        if (entry.path().extension() == ".yaml") files.push_back(load_file(entry.path().string(), findings));
    }
    ASSERT_GE(files.size(), 3u);
    check_set(files, findings);
    for (const auto& item : findings.items) ADD_FAILURE() << item.to_string();
}

class NodeSetupTest : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() /
               fmt::format("vmha-config-test-{}-{}", ::getpid(),
                           ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::create_directories(dir_ / "modules");
    }
    void TearDown() override { fs::remove_all(dir_); }
    void write(const fs::path& p, const std::string& body) { std::ofstream(dir_ / p) << body; }
    std::string node_file() const { return (dir_ / "vmha.yaml").string(); }
    std::string node_text() const {
        return fmt::format("node: hv1\nmodules_dir: {}\ntls: {{ca: /c, cert: /c, key: /k}}\n",
                           (dir_ / "modules").string());
    }
    fs::path dir_;
};

TEST_F(NodeSetupTest, LoadsTheNodeAndEveryModule) {
    write("vmha.yaml", node_text());
    write("modules/a.yaml", text({"a", "/srv/a.raw", 7801}));
    write("modules/b.yaml", text({"b", "/srv/b.raw", 7811}));
    write("modules/README", "not a module");
    Findings findings;
    auto setup = load_node_setup(node_file(), findings);
    ASSERT_TRUE(setup);
    EXPECT_EQ(setup->node.name, "hv1");
    ASSERT_EQ(setup->modules.size(), 2u);
    EXPECT_EQ(setup->modules[0].name, "a");
}

TEST_F(NodeSetupTest, RefusesToStartOnAnyInvalidModule) {
    write("vmha.yaml", node_text());
    write("modules/a.yaml", text({"a", "/srv/a.raw", 7801}));
    write("modules/b.yaml", text({"b", "/srv/b.raw", 70000}));
    Findings findings;
    EXPECT_FALSE(load_node_setup(node_file(), findings));
    EXPECT_TRUE(findings.has_errors());
}

TEST_F(NodeSetupTest, UnreadableNodeFile) {
    Findings findings;
    EXPECT_FALSE(load_node_setup((dir_ / "missing.yaml").string(), findings));
    EXPECT_TRUE(findings.unreadable);
    ASSERT_EQ(findings.items.size(), 1u);
    EXPECT_EQ(findings.items[0].to_string(),
              (dir_ / "missing.yaml").string() +
                  ": (file): cannot read the file: No such file or directory");
}
