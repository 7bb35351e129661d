// The real `vmha config check` binary: findings on stdout, documented exit statuses, --json.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace {

struct Run {
    int status = -1;
    std::string out;
};

Run run(const std::string& args) {
    Run r;
    const std::string cmd = std::string(VMHA_CLI_PATH) + " " + args + " 2>/dev/null";
    FILE* p = ::popen(cmd.c_str(), "r");
    if (p == nullptr) return r;
    std::array<char, 4096> buf{};
    std::size_t n = 0;
    while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
    const int w = ::pclose(p);
    r.status = WIFEXITED(w) ? WEXITSTATUS(w) : -1;
    return r;
}

std::size_t count_lines_with(const std::string& text, const std::string& needle) {
    std::size_t n = 0;
    std::size_t start = 0;
    while (start < text.size()) {
        const auto end = text.find('\n', start);
        const std::string line = text.substr(start, end - start);
        if (line.find(needle) != std::string::npos) ++n;
        if (end == std::string::npos) break;
        start = end + 1;
    }
    return n;
}

const std::string data = VMHA_TEST_DATA_DIR;
const std::string configs = VMHA_CONFIGS_DIR;

}  // namespace

TEST(VmhaConfigCheck, ShippedConfigsPass) {
    auto r = run("config check " + configs + "/web1.yaml " + configs + "/db1.yaml " + configs +
                 "/vmha.yaml");
    EXPECT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("3 files checked: 0 errors, 0 warnings"), std::string::npos) << r.out;
}

TEST(VmhaConfigCheck, ADozenMistakesGiveADozenLocatedFindings) {
    auto r = run("config check -q " + data + "/dozen-mistakes.yaml");
    EXPECT_EQ(r.status, 1);
    // Each error line is "FILE:LINE:COLUMN: key: reason"; warnings say "warning:".
    const std::string prefix = data + "/dozen-mistakes.yaml:";
    EXPECT_EQ(count_lines_with(r.out, prefix), 12u) << r.out;
    EXPECT_EQ(count_lines_with(r.out, ": warning: "), 0u) << r.out;
    for (const char* expected : {":5:3: vm.hypervisr: ", ":6:15: vm.domain_xml: ",
                                 ":9:11: disks[1].path: ", ":13:11: nodes[1].name: ",
                                 ":14:14: nodes[1].address: ", ":16:9: replication.port: ",
                                 ":17:12: replication.timeout: ", ":19:13: heartbeat.interval: ",
                                 ":25:13: checkers[0].action: ", ":28:19: failback.preferred_node: ",
                                 ":29:13: failback.schedule: ", ":33:11: health_check.allow[0]: "}) {
        EXPECT_NE(r.out.find(std::string("dozen-mistakes.yaml") + expected), std::string::npos)
            << "missing " << expected << " in\n" << r.out;
    }
}

TEST(VmhaConfigCheck, JsonCarriesTheSameFindings) {
    auto r = run("config check --json " + data + "/dozen-mistakes.yaml");
    EXPECT_EQ(r.status, 1);
    auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["valid"], false);
    EXPECT_EQ(j["errors"], 12);
    EXPECT_EQ(j["warnings"], 0);
    ASSERT_EQ(j["findings"].size(), 12u);
    const auto& first_error = j["findings"][0];
    EXPECT_EQ(first_error["line"], 5);
    EXPECT_EQ(first_error["column"], 3);
    EXPECT_EQ(first_error["key"], "vm.hypervisr");
    EXPECT_EQ(first_error["severity"], "error");
    EXPECT_EQ(first_error["message"],
              "unknown key \"hypervisr\" in the vm section; did you mean \"hypervisor\"?");
    EXPECT_EQ(j["files"][0]["kind"], "module");
    EXPECT_EQ(j["files"][0]["module"], "dozen-mistakes");
}

TEST(VmhaConfigCheck, UnreadableFileExitsTwo) {
    auto r = run("config check " + configs + "/web1.yaml /nonexistent/vmha-missing.yaml");
    EXPECT_EQ(r.status, 2);
    EXPECT_NE(r.out.find("/nonexistent/vmha-missing.yaml: (file): cannot read the file: No such "
                         "file or directory"),
              std::string::npos)
        << r.out;
}

TEST(VmhaConfigCheck, UsageErrorsExit64) {
    EXPECT_EQ(run("config check").status, 64);
    EXPECT_EQ(run("frobnicate").status, 64);
    EXPECT_EQ(run("--help").status, 0);
}
