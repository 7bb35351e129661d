#include <gtest/gtest.h>

#include <vmha/peer/fingerprint.h>

namespace vmha::peer {
namespace {

const char* const base = R"(module: web1
replication:
  port: 7801
  timeout: 5s
checkers:
  - type: vm
  - type: tcp
    port: 80
heartbeat:
  paths:
    - name: lan
      addresses: {hv1: 192.0.2.11, hv2: 192.0.2.12}
)";

Fingerprint of(const std::string& text) {
    auto f = config_fingerprint(text);
    EXPECT_TRUE(f) << f.error().message;
    return f ? *f : Fingerprint{};
}

TEST(Fingerprint, NamesEveryLeafKeyPath) {
    const auto f = of(base);
    for (const char* key : {"module", "replication.port", "replication.timeout", "checkers[0].type", "checkers[1].port",
                            "heartbeat.paths[0].name", "heartbeat.paths[0].addresses.hv2"}) {
        EXPECT_TRUE(f.contains(key)) << key;
    }
    EXPECT_FALSE(f.contains("replication"));
}

TEST(Fingerprint, EqualFilesHaveNoDifferences) {
    EXPECT_TRUE(fingerprint_differences(of(base), of(base)).empty());
}

TEST(Fingerprint, DifferingKeysAreListed) {
    std::string other = base;
    other.replace(other.find("timeout: 5s"), 11, "timeout: 7s");
    other.replace(other.find("port: 80"), 8, "port: 81");
    other += "failback:\n  mode: automatic\n";
    const std::vector<std::string> expected = {"checkers[1].port", "failback.mode", "replication.timeout"};
    EXPECT_EQ(fingerprint_differences(of(base), of(other)), expected);
    EXPECT_EQ(fingerprint_differences(of(other), of(base)), expected);
}

TEST(Fingerprint, KeyOrderQuotingAndCommentsDoNotMatter) {
    const std::string reordered = R"(# the same module, written differently
heartbeat:
  paths:
    - addresses:
        hv2: 192.0.2.12   # comment
        hv1: "192.0.2.11"
      name: lan
checkers:
  - type: vm
  - port: 80
    type: tcp
replication: {timeout: 5s, port: '7801'}
module: web1
)";
    EXPECT_TRUE(fingerprint_differences(of(base), of(reordered)).empty());
}

TEST(Fingerprint, ListOrderMatters) {
    const std::string in_order = "  - type: vm\n  - type: tcp\n    port: 80\n";
    std::string swapped = base;
    swapped.replace(swapped.find(in_order), in_order.size(), "  - type: tcp\n    port: 80\n  - type: vm\n");
    EXPECT_FALSE(fingerprint_differences(of(base), of(swapped)).empty());
}

TEST(Fingerprint, TextThatIsNotYamlIsAnError) {
    auto f = config_fingerprint("module: [web1\n");
    ASSERT_FALSE(f);
    EXPECT_TRUE(f.error().is(errc::invalid_config));
}

}  // namespace
}  // namespace vmha::peer
