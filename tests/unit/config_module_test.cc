// Every validation rule of module and node files, each asserting the exact location and
// reason. Module texts are built from one line per top-level section, so that line N of the
// text is section N (see `sections` below) and columns can be read off the test itself.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include <vmha/config/load.h>

using namespace vmha::config;

namespace {

// Line numbers: 1 module, 2 vm, 3 disks, 4 nodes, 5 replication, 6 heartbeat, 7 checkers,
// 8 restart, 9 failback, 10 witness, 11 health_check, 12 fencing (absent by default).
const std::vector<std::pair<std::string, std::string>> sections = {
    {"module", "m"},
    {"vm", "{name: m, domain_xml: /etc/vmha/m.xml}"},
    {"disks", "[{path: /srv/m.raw}]"},
    {"nodes", "[{name: hv1, address: 10.0.0.1}, {name: hv2, address: 10.0.0.2}]"},
    {"replication", "{port: 7801}"},
    {"heartbeat", "{paths: [{port: 7802, addresses: {hv1: 10.0.0.1, hv2: 10.0.0.2}}]}"},
    {"checkers", "[{type: vm}]"},
    {"restart", "{attempts: 3, window: 24h}"},
    {"failback", "{mode: manual}"},
    {"witness", "{endpoints: [\"10.0.0.3:7950\"]}"},
    {"health_check", "{port: 9010}"},
    {"fencing", ""},
};

// The base module with some sections replaced ("" drops a section, keeping its line).
std::string module_text(const std::map<std::string, std::string>& changes = {}) {
    std::string text;
    for (const auto& [key, value] : sections) {
        auto it = changes.find(key);
        const std::string& v = it == changes.end() ? value : it->second;
        text += v.empty() ? "# no " + key : key + ": " + v;
        text += '\n';
    }
    return text;
}

std::vector<std::string> errors_of(const std::string& file, const std::string& text) {
    Findings findings;
    auto loaded = parse_file(file, text, findings);
    std::stable_sort(findings.items.begin(), findings.items.end(), [](const auto& a, const auto& b) {
        return std::pair(a.where.line, a.where.column) < std::pair(b.where.line, b.where.column);
    });
    std::vector<std::string> out;
    for (const auto& f : findings.items) {
        if (f.severity == Severity::error) out.push_back(f.to_string());
    }
    EXPECT_EQ(loaded.valid, out.empty());
    return out;
}

std::vector<std::string> errors(const std::map<std::string, std::string>& changes) {
    return errors_of("m.yaml", module_text(changes));
}

std::vector<std::string> warnings_of(const std::string& file, const std::string& text) {
    Findings findings;
    (void)parse_file(file, text, findings);
    std::vector<std::string> out;
    for (const auto& f : findings.items) {
        if (f.severity == Severity::warning) out.push_back(f.to_string());
    }
    return out;
}

using Lines = std::vector<std::string>;

}  // namespace

TEST(ModuleFile, TheBaseModuleIsValidAndParsedWithDefaults) {
    Findings findings;
    auto f = parse_file("m.yaml", module_text(), findings);
    ASSERT_TRUE(f.valid);
    ASSERT_EQ(f.kind, FileKind::module);
    const Module& m = *f.module;
    EXPECT_EQ(m.name, "m");
    EXPECT_EQ(m.disks.at(0).export_name, "m");
    EXPECT_EQ(m.disks.at(0).format, DiskFormat::raw);
    EXPECT_EQ(m.nodes.at(1).hypervisor_uri, "qemu:///system");
    EXPECT_EQ(m.replication.timeout, std::chrono::milliseconds(1500));
    EXPECT_EQ(m.heartbeat.interval, std::chrono::milliseconds(250));
    EXPECT_EQ(m.heartbeat.timeout, std::chrono::milliseconds(1500));
    EXPECT_EQ(m.heartbeat.paths.at(0).addresses.at("hv2").text, "10.0.0.2");
    EXPECT_EQ(m.checkers.at(0).action, CheckerAction::restart);
    EXPECT_EQ(m.replication.split_brain, SplitBrainPolicy::disconnect);
    EXPECT_EQ(m.peer_of("hv1")->name, "hv2");
    EXPECT_TRUE(findings.items.empty());
}

TEST(ModuleFile, UnknownKeyWithDidYouMean) {
    EXPECT_EQ(errors({{"replication", "{port: 7801, timout: 5s}"}}),
              (Lines{"m.yaml:5:27: replication.timout: unknown key \"timout\" in the replication "
                    "section; did you mean \"timeout\"?"}));
}

TEST(ModuleFile, SplitBrainPolicy) {
    Findings findings;
    auto f = parse_file("m.yaml", module_text({{"replication", "{port: 7801, split_brain: discard-zero-changes}"}}),
                        findings);
    ASSERT_TRUE(f.valid);
    EXPECT_EQ(f.module->replication.split_brain, SplitBrainPolicy::discard_zero_changes);
    EXPECT_EQ(to_string(f.module->replication.split_brain), "discard-zero-changes");
    EXPECT_EQ(errors({{"replication", "{port: 7801, split_brain: discard-zero-chnages}"}}),
              (Lines{"m.yaml:5:40: replication.split_brain: \"discard-zero-chnages\" is not one of "
                     "disconnect or discard-zero-changes; did you mean \"discard-zero-changes\"?"}));
    EXPECT_EQ(errors({{"replication", "{port: 7801, split_brain: [disconnect]}"}}).size(), 1u);
}

// imagesyncd's limits: a chunk from 4 KiB to 16 MiB, an activity-log extent from 64 KiB (and
// the chunk size) to 1 GiB; both are passed to it (--chunk-size, --al-extent).
TEST(ModuleFile, ChunkSizeAndActivityLogExtent) {
    Findings findings;
    auto f = parse_file("m.yaml", module_text({{"replication", "{port: 7801, chunk_size: 128KiB, activity_log_extent: 64MiB}"}}),
                        findings);
    ASSERT_TRUE(f.valid);
    EXPECT_EQ(f.module->replication.chunk_size, 128u << 10);
    EXPECT_EQ(f.module->replication.activity_log_extent, 64u << 20);
    EXPECT_EQ(errors({{"replication", "{port: 7801, chunk_size: 4KiB, activity_log_extent: 32KiB}"}}),
              (Lines{"m.yaml:5:66: replication.activity_log_extent: activity-log extent 32 KiB must "
                     "be a power of two from 64 KiB to 1 GiB"}));
    EXPECT_EQ(errors({{"replication", "{port: 7801, chunk_size: 3KiB}"}}).size(), 1u);
}

// Passed to imagesyncd (--tcp-congestion); only its form is checked here, imagesyncd checks
// the name against its node's kernel.
TEST(ModuleFile, TcpCongestion) {
    Findings findings;
    auto plain = parse_file("m.yaml", module_text({{"replication", "{port: 7801}"}}), findings);
    ASSERT_TRUE(plain.valid);
    EXPECT_EQ(plain.module->replication.tcp_congestion, "cubic");
    auto f = parse_file("m.yaml", module_text({{"replication", "{port: 7801, tcp_congestion: system}"}}),
                        findings);
    ASSERT_TRUE(f.valid);
    EXPECT_EQ(f.module->replication.tcp_congestion, "system");
    EXPECT_EQ(errors({{"replication", "{port: 7801, tcp_congestion: Cubic}"}}),
              (Lines{"m.yaml:5:43: replication.tcp_congestion: TCP congestion control \"Cubic\" is "
                     "not a name: 1 to 15 characters of a-z, 0-9, _ and - (or \"system\")"}));
    EXPECT_EQ(errors({{"replication", "{port: 7801, tcp_congestion: \"\"}"}}).size(), 1u);
}

TEST(ModuleFile, UnknownKeyWithoutACloseMatch) {
    auto text = module_text() + "colour: blue\n";
    EXPECT_EQ(errors_of("m.yaml", text),
              (Lines{"m.yaml:13:1: colour: unknown key \"colour\" in a module file"}));
}

TEST(ModuleFile, WrongType) {
    EXPECT_EQ(errors({{"disks", "/srv/m.raw"}}),
              (Lines{"m.yaml:3:8: disks: expected a list, found \"/srv/m.raw\""}));
    EXPECT_EQ(errors({{"replication", "{port: [7801]}"}}),
              (Lines{"m.yaml:5:21: replication.port: expected a port number, found a list"}));
    EXPECT_EQ(errors({{"restart", "{attempts: three}"}}),
              (Lines{"m.yaml:8:21: restart.attempts: expected a whole number, found \"three\""}));
}

TEST(ModuleFile, DurationWithoutUnit) {
    EXPECT_EQ(errors({{"replication", "{port: 7801, timeout: 30}"}}),
              (Lines{"m.yaml:5:36: replication.timeout: duration \"30\" has no unit; write it with "
                    "one of ms, s, m, h, d, e.g. \"30s\""}));
}

TEST(ModuleFile, PortOutOfRange) {
    EXPECT_EQ(errors({{"replication", "{port: 70000}"}}),
              (Lines{"m.yaml:5:21: replication.port: port 70000 is out of range; a port is 1 to "
                    "65535"}));
    EXPECT_EQ(errors({{"health_check", "{port: 0}"}}),
              (Lines{"m.yaml:11:22: health_check.port: port 0 is out of range; a port is 1 to "
                    "65535"}));
}

TEST(ModuleFile, PortUsedTwiceInOneModule) {
    EXPECT_EQ(errors({{"health_check", "{port: 7801}"}}),
              (Lines{"m.yaml:11:22: health_check.port: port 7801 is also used by replication.port "
                    "(at m.yaml:5:21)"}));
}

TEST(ModuleFile, HeartbeatPathsMayShareAPortOnDifferentNetworks) {
    EXPECT_EQ(errors({{"heartbeat",
                       "{paths: [{port: 7802, addresses: {hv1: 10.0.0.1, hv2: 10.0.0.2}}, "
                       "{port: 7802, addresses: {hv1: 10.1.0.1, hv2: 10.1.0.2}}]}"}}),
              (Lines{}));
}

TEST(ModuleFile, TwoNodesThatAreTheSame) {
    EXPECT_EQ(errors({{"nodes", "[{name: hv1, address: 10.0.0.1}, {name: hv1, address: 10.0.0.2}]"},
                      {"heartbeat", "{paths: [{port: 7802, addresses: {hv1: 10.0.0.1}}]}"}}),
              (Lines{"m.yaml:4:48: nodes[1].name: both nodes of the module are \"hv1\"; a module "
                    "mirrors between two different nodes"}));
}

TEST(ModuleFile, ExactlyTwoNodes) {
    EXPECT_EQ(errors({{"nodes", "[{name: hv1, address: 10.0.0.1}]"},
                      {"heartbeat", "{paths: [{port: 7802, addresses: {hv1: 10.0.0.1}}]}"}}),
              (Lines{"m.yaml:4:8: nodes: a module names exactly two nodes, found 1"}));
}

TEST(ModuleFile, DiskListedTwice) {
    EXPECT_EQ(errors({{"disks", "[{path: /srv/m.raw}, {path: /srv/m.raw}]"}}),
              (Lines{"m.yaml:3:36: disks[1].path: disk \"/srv/m.raw\" is listed twice (first at "
                    "m.yaml:3:16)"}));
}

TEST(ModuleFile, ExportNamesMustDiffer) {
    EXPECT_EQ(errors({{"disks", "[{path: /a/m.raw}, {path: /b/m.qcow2}]"}}),
              (Lines{"m.yaml:3:34: disks[1].export: export name \"m\" is used by two disks (first "
                    "at m.yaml:3:16); set a distinct \"export\""}));
}

TEST(ModuleFile, DiskPathMustBeAbsolute) {
    EXPECT_EQ(errors({{"disks", "[{path: m.raw}]"}}),
              (Lines{"m.yaml:3:16: disks[0].path: path \"m.raw\" must be absolute (start with "
                    "\"/\")"}));
}

TEST(ModuleFile, PreferredNodeMustBeOneOfTheModulesNodes) {
    EXPECT_EQ(errors({{"failback", "{mode: automatic, preferred_node: hv3}"}}),
              (Lines{"m.yaml:9:45: failback.preferred_node: preferred node \"hv3\" is not one of "
                    "the module's nodes (hv1 and hv2); did you mean \"hv1\"?"}));
}

TEST(ModuleFile, BadCronField) {
    EXPECT_EQ(errors({{"failback",
                       "{mode: scheduled, preferred_node: hv1, schedule: \"0 2 * 13 *\"}"}}),
              (Lines{"m.yaml:9:60: failback.schedule: cron field 4 (month) \"13\": 13 is out of "
                    "range 1-12"}));
}

TEST(ModuleFile, ScheduleAndModeMustAgree) {
    EXPECT_EQ(errors({{"failback", "{mode: scheduled, preferred_node: hv1}"}}),
              (Lines{"m.yaml:9:18: failback.schedule: mode \"scheduled\" needs a cron \"schedule\", "
                    "e.g. \"0 2 * * 0\""}));
    EXPECT_EQ(errors({{"failback", "{mode: manual, schedule: \"@daily\"}"}}),
              (Lines{"m.yaml:9:36: failback.schedule: a schedule is only used with mode "
                    "\"scheduled\" (mode is \"manual\")"}));
    EXPECT_EQ(errors({{"failback", "{mode: automatic}"}}),
              (Lines{"m.yaml:9:18: failback.preferred_node: mode \"automatic\" needs a "
                    "\"preferred_node\" to move the VM back to"}));
}

TEST(ModuleFile, UnknownTimeZone) {
    EXPECT_EQ(errors({{"failback", "{mode: manual, timezone: Mars/Olympus}"}}),
              (Lines{"m.yaml:9:36: failback.timezone: time zone \"Mars/Olympus\" is unknown (not in "
                    "/usr/share/zoneinfo), e.g. \"Europe/Paris\" or \"UTC\""}));
}

TEST(ModuleFile, BadChoiceWithDidYouMean) {
    EXPECT_EQ(errors({{"checkers", "[{type: vm, action: failovr}]"}}),
              (Lines{"m.yaml:7:31: checkers[0].action: \"failovr\" is not one of restart, failover "
                    "or wait; did you mean \"failover\"?"}));
    EXPECT_EQ(errors({{"checkers", "[{type: tpc}]"}}),
              (Lines{"m.yaml:7:19: checkers[0].type: \"tpc\" is not one of vm, process, command, "
                    "tcp, ping, interface or replication; did you mean \"tcp\"?"}));
}

TEST(ModuleFile, CheckerKeysDependOnItsType) {
    EXPECT_EQ(errors({{"checkers", "[{type: vm, port: 80}]"}}),
              (Lines{"m.yaml:7:23: checkers[0].port: unknown key \"port\" in a vm checker"}));
    EXPECT_EQ(errors({{"checkers", "[{type: tcp, port: 80}]"}}),
              (Lines{"m.yaml:7:12: checkers[0].host: required key \"host\" is missing"}));
    EXPECT_EQ(errors({{"checkers", "[{type: command, command: check.sh}]"}}),
              (Lines{"m.yaml:7:37: checkers[0].command: program \"check.sh\" must be given by its "
                    "absolute path"}));
    EXPECT_EQ(errors({{"checkers", "[{type: vm}, {type: vm}]"}}),
              (Lines{"m.yaml:7:31: checkers[1].name: checker name \"vm\" is used twice (first at "
                    "m.yaml:7:12); give each checker of one type its own \"name\""}));
}

TEST(ModuleFile, MissingRequiredKey) {
    EXPECT_EQ(errors({{"replication", "{timeout: 5s}"}}),
              (Lines{"m.yaml:5:14: replication.port: required key \"port\" is missing"}));
    EXPECT_EQ(errors({{"vm", ""}}), (Lines{"m.yaml:1:1: vm: required key \"vm\" is missing"}));
}

TEST(ModuleFile, KeyGivenTwice) {
    auto text = module_text() + "witness: {endpoints: [\"10.0.0.4:7950\"]}\n";
    EXPECT_EQ(errors_of("m.yaml", text),
              (Lines{"m.yaml:13:1: witness: key \"witness\" appears twice in a module file"}));
}

TEST(ModuleFile, HeartbeatTimeoutAtLeastTwiceTheInterval) {
    EXPECT_EQ(errors({{"heartbeat",
                       "{interval: 1s, timeout: 1500ms, paths: [{port: 7802, addresses: {hv1: "
                       "10.0.0.1, hv2: 10.0.0.2}}]}"}}),
              (Lines{"m.yaml:6:36: heartbeat.timeout: timeout 1s500ms must be at least twice the "
                    "interval 1s, or one late heartbeat would declare the peer lost"}));
}

TEST(ModuleFile, HeartbeatAddressesNameTheModulesNodes) {
    EXPECT_EQ(errors({{"heartbeat", "{paths: [{port: 7802, addresses: {hv1: 10.0.0.1, hv22: "
                                    "10.0.0.2}}]}"}}),
              (Lines{"m.yaml:6:45: heartbeat.paths[0].addresses: no address for node \"hv2\" on "
                    "this path",
                    "m.yaml:6:61: heartbeat.paths[0].addresses.hv22: \"hv22\" is not one of the "
                    "module's nodes; did you mean \"hv2\"?"}));
}

TEST(ModuleFile, BadAddressAndNetwork) {
    EXPECT_EQ(errors({{"nodes", "[{name: hv1, address: 10.0.0.1}, {name: hv2, address: "
                                "10.0.0.999}]"}}),
              (Lines{"m.yaml:4:62: nodes[1].address: \"10.0.0.999\" is not a valid IPv4 address"}));
    EXPECT_EQ(errors({{"health_check", "{port: 9010, allow: [10.0.0.0/24, 10.0.0.1/8]}"}}),
              (Lines{"m.yaml:11:49: health_check.allow[1]: \"10.0.0.1/8\" has host bits set; did "
                    "you mean \"10.0.0.0/8\"?"}));
}

TEST(ModuleFile, Witness) {
    EXPECT_EQ(errors({{"witness", "{endpoints: [\"10.0.0.3:7950\", \"10.0.0.4:7950\"]}"}}),
              (Lines{"m.yaml:10:22: witness.endpoints: a vmha witness has exactly one endpoint, "
                    "found 2"}));
    EXPECT_EQ(errors({{"witness", "{endpoints: [\"10.0.0.3:7950\"], lease: 1s, margin: 100ms}"}}),
              (Lines{"m.yaml:10:48: witness.lease: lease 1s must be longer than the heartbeat "
                    "timeout 1s500ms"}));
    EXPECT_EQ(errors({{"witness", "{type: etcd, endpoints: [\"10.0.0.3\"]}"}}),
              (Lines{"m.yaml:10:35: witness.endpoints[0]: \"10.0.0.3\" has no port; write "
                    "\"HOST:PORT\""}));
}

TEST(ModuleFile, FencingHook) {
    Findings findings;
    auto loaded = parse_file("m.yaml",
                             module_text({{"fencing", "{command: [/usr/sbin/fence_ipmilan, -n, \"{peer}\", -m, "
                                                      "\"{module}@{self}\"], timeout: 2m}"}}),
                             findings);
    ASSERT_TRUE(loaded.valid);
    ASSERT_TRUE(loaded.module->fencing);
    EXPECT_EQ(loaded.module->fencing->command,
              (std::vector<std::string>{"/usr/sbin/fence_ipmilan", "-n", "{peer}", "-m", "{module}@{self}"}));
    EXPECT_EQ(loaded.module->fencing->timeout, std::chrono::minutes(2));
    Findings none;
    EXPECT_FALSE(parse_file("m.yaml", module_text(), none).module->fencing);
    // A string is split on blanks; the default timeout is 60 s.
    Findings split;
    auto s = parse_file("m.yaml", module_text({{"fencing", "{command: \"/usr/local/bin/fence {peer}\"}"}}), split);
    ASSERT_TRUE(s.valid);
    EXPECT_EQ(s.module->fencing->command, (std::vector<std::string>{"/usr/local/bin/fence", "{peer}"}));
    EXPECT_EQ(s.module->fencing->timeout, std::chrono::seconds(60));

    EXPECT_EQ(errors({{"fencing", "{command: \"fence {peer}\"}"}}),
              (Lines{"m.yaml:12:20: fencing.command: program \"fence\" must be given by its absolute path"}));
    EXPECT_EQ(errors({{"fencing", "{command: \"/bin/fence {node}\"}"}}),
              (Lines{"m.yaml:12:20: fencing.command: unknown placeholder \"{node}\" in \"{node}\"; the "
                     "placeholders are {peer}, {self} and {module}"}));
    EXPECT_EQ(errors({{"fencing", "{command: /bin/fence, timeout: 2h}"}}),
              (Lines{"m.yaml:12:41: fencing.timeout: the fencing timeout must be 1s to 1h"}));
    EXPECT_EQ(errors({{"fencing", "{timeout: 10s}"}}),
              (Lines{"m.yaml:12:10: fencing.command: required key \"command\" is missing"}));
    EXPECT_EQ(errors({{"fencing", "{command: /bin/fence, retry: 5s}"}}).size(), 1u);
}

TEST(ModuleFile, NoWitnessIsAWarningNotAnError) {
    auto text = module_text({{"witness", ""}});
    EXPECT_EQ(errors_of("m.yaml", text), (Lines{}));
    EXPECT_EQ(warnings_of("m.yaml", text),
              (Lines{"m.yaml:1:1: witness: warning: no witness: if the link between the nodes "
                    "breaks, both may go ALONE and run the VM; the split brain is detected when "
                    "they reconnect, and one side's writes will have to be discarded; configure "
                    "a witness"}));
}

TEST(ModuleFile, FileNameShouldMatchTheModule) {
    EXPECT_EQ(warnings_of("other.yaml", module_text()),
              (Lines{"other.yaml:1:9: module: warning: module \"m\" is in a file named "
                    "\"other.yaml\"; name the file \"m.yaml\" so that operators find it"}));
}

TEST(ModuleFile, BadModuleName) {
    EXPECT_EQ(errors_of("m.yaml", module_text({{"module", "\"web 1\""}})),
              (Lines{"m.yaml:1:9: module: name \"web 1\" must be 1 to 64 letters, digits, '-', '_' "
                    "or '.', starting with a letter or digit"}));
}

TEST(ModuleFile, YamlSyntaxErrorIsLocated) {
    EXPECT_EQ(errors_of("m.yaml", "module: m\nvm: {name: m\n"),
              (Lines{"m.yaml:3:1: (syntax): YAML syntax error: end of map flow not found"}));
}

TEST(ModuleFile, NeitherModuleNorNode) {
    EXPECT_EQ(errors_of("x.yaml", "name: x\n"),
              (Lines{"x.yaml:1:1: (file): neither a module file (no \"module:\" key) nor a node "
                    "file (no \"node:\" key)"}));
    EXPECT_EQ(errors_of("x.yaml", ""),
              (Lines{"x.yaml:1:1: (file): the file is empty; a module file starts with \"module: "
                    "NAME\", a node file with \"node: NAME\""}));
}

TEST(ModuleFile, EveryMistakeIsReportedNotJustTheFirst) {
    EXPECT_EQ(errors({{"replication", "{port: 70000, timeout: 30, resync_rate: fast}"}}).size(), 3u);
}

TEST(NodeFile, ValidWithDefaults) {
    Findings findings;
    auto f = parse_file("vmha.yaml",
                        "node: hv1\ntls: {ca: /t/ca.pem, cert: /t/hv1.pem, key: /t/hv1.key}\n",
                        findings);
    ASSERT_TRUE(f.valid);
    EXPECT_EQ(f.node->name, "hv1");
    EXPECT_EQ(f.node->modules_dir, "/etc/vmha/modules");
    EXPECT_TRUE(findings.items.empty());
}

TEST(NodeFile, Mistakes) {
    EXPECT_EQ(errors_of("vmha.yaml", "node: hv1\nrun_dir: run/vmha\nlog: {level: loud}\n"
                                     "tls: {ca: /t/ca.pem, cert: /t/c.pem}\nstate: /x\n"),
              (Lines{"vmha.yaml:2:10: run_dir: path \"run/vmha\" must be absolute (start with \"/\")",
                    "vmha.yaml:3:14: log.level: log level \"loud\" is not one of error, warn (or "
                    "warning), info, debug, trace or off",
                    "vmha.yaml:4:6: tls.key: required key \"key\" is missing",
                    "vmha.yaml:5:1: state: unknown key \"state\" in a node file; did you mean "
                    "\"state_dir\"?"}));
}

TEST(NodeFile, NoTlsIsAWarning) {
    EXPECT_EQ(warnings_of("vmha.yaml", "node: hv1\n"),
              (Lines{"vmha.yaml:1:1: tls: warning: no tls section: the control channel between "
                    "nodes will not start until certificates are configured"}));
}

TEST(ModuleFile, CaughtInReview) {
    EXPECT_EQ(errors({{"replication", "{port: 7801, chunk_size: 8MiB}"}}),
              (Lines{"m.yaml:5:39: replication.chunk_size: the activity-log extent (4 MiB) must "
                     "not be smaller than the chunk size (8 MiB)"}));
    EXPECT_EQ(errors({{"checkers", "[{type: command, command: [\"\"]}]"}}),
              (Lines{"m.yaml:7:37: checkers[0].command: program \"\" must be given by its "
                     "absolute path"}));
    EXPECT_EQ(errors({{"failback", "{mode: scheduled, preferred_node: hv1, schedule: \"0 0 30 2 *\"}"}}),
              (Lines{"m.yaml:9:60: failback.schedule: schedule \"0 0 30 2 *\" never fires (no "
                     "such date)"}));
    EXPECT_EQ(errors({{"failback", "{mode: manual, timezone: zone.tab}"}}),
              (Lines{"m.yaml:9:36: failback.timezone: time zone \"zone.tab\" is unknown (not in "
                     "/usr/share/zoneinfo), e.g. \"Europe/Paris\" or \"UTC\""}));
    EXPECT_EQ(errors({{"disks", "[{path: \"/img/my disk.raw\"}]"}}),
              (Lines{"m.yaml:3:16: disks[0].export: the file name gives the export name \"my "
                     "disk\", which is not a valid name; set \"export\""}));
    EXPECT_EQ(errors({{"checkers", "[]"}}),
              (Lines{"m.yaml:7:11: checkers: an empty list leaves the VM unwatched; list at least "
                     "one checker, or leave \"checkers\" out for the default vm checker"}));
    EXPECT_EQ(warnings_of("m.yaml", module_text({{"witness", "[]"}})), Lines{});
    EXPECT_EQ(errors({{"checkers", "[{type: interface, interface: \"br0:1\"}]"}}),
              (Lines{"m.yaml:7:41: checkers[0].interface: \"br0:1\" is not a valid interface name "
                     "(at most 15 characters, no '/', ':' or blanks)"}));
}
