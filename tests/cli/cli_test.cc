// The vmha admin CLI against two real vmhad (tests/vmhad/cluster.h): every verb, its --json
// output and exit status, forwarding to the node that runs the VM, and the refusals of unsafe
// commands with their reasons.
#include "../vmhad/cluster.h"

namespace vmhad_test {
namespace {

// The JSON object a --json run printed on stdout (a refusal also prints a sentence on stderr,
// which run_tool mixes in): from the first line that opens an object.
nlohmann::json json_of(const ToolResult& r) {
    std::size_t pos = 0;
    while (pos < r.output.size()) {
        if (r.output[pos] == '{') {
            auto j = nlohmann::json::parse(r.output.substr(pos), nullptr, false);
            if (!j.is_discarded()) return j;
            const auto eol = r.output.find('\n', pos);
            auto line = nlohmann::json::parse(r.output.substr(pos, eol - pos), nullptr, false);
            if (!line.is_discarded()) return line;
        }
        pos = r.output.find('\n', pos);
        if (pos == std::string::npos) break;
        ++pos;
    }
    return nullptr;
}

// Every line of the output that is a JSON object (JSON lines: log, --watch).
std::vector<nlohmann::json> json_lines(const ToolResult& r) {
    std::vector<nlohmann::json> out;
    std::istringstream in(r.output);
    std::string line;
    while (std::getline(in, line)) {
        auto j = nlohmann::json::parse(line, nullptr, false);
        if (j.is_object()) out.push_back(std::move(j));
    }
    return out;
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

void start_pair(Cluster& c, bool vmhad_running = false) {
    if (!vmhad_running) {
        for (const char* n : {"hv1", "hv2"}) c.start_vmhad(n);
        for (const char* n : {"hv1", "hv2"}) ASSERT_TRUE(c.wait_admin(n));
    }
    for (const char* n : {"hv1", "hv2"}) {
        auto r = c.run_vmha(n, {"start", "web1"});
        ASSERT_EQ(r.exit_code, 0) << r.output;
    }
    ASSERT_TRUE(c.wait_state("hv1", "PRIM"));
    ASSERT_TRUE(c.wait_state("hv2", "SECOND"));
    ASSERT_TRUE(poll_until(60s, [&] { return c.module_status("hv2")["data_state"] == "UpToDate"; }));
    ASSERT_TRUE(poll_until(30s, [&] { return c.module_status("hv1")["vm"]["state"] == "running"; }));
}

ToolResult vmha(std::vector<std::string> args, const fs::path& dir) {
    std::vector<std::string> argv{VMHA_PATH};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_tool(argv, dir, 30s);
}

TEST(VmhaCli, UsageHelpAndUnreachableDaemon) {
    TempDir dir;
    const std::string none = (dir / "none.sock").string();
    // vmhad not reachable: 2, and 5 for `state`; --json says so on stdout.
    auto r = vmha({"--socket", none, "status"}, dir.path());
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_TRUE(has(r.output, "cannot connect to vmhad")) << r.output;
    r = vmha({"--socket", none, "restart", "web1", "--json"}, dir.path());
    EXPECT_EQ(r.exit_code, 2);
    auto j = json_of(r);
    ASSERT_TRUE(j.is_object()) << r.output;
    EXPECT_EQ(j["ok"], false);
    EXPECT_EQ(j["code"], "unreachable");
    EXPECT_TRUE(j["error"].is_string());
    EXPECT_EQ(vmha({"--socket", none, "state", "web1"}, dir.path()).exit_code, 5);

    // Bad command lines: 64.
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"frobnicate"},
             {"status", "--frob"},
             {"restart"},
             {"swap", "web1", "extra"},
             {"failover", "maybe"},
             {"prim", "web1", "--yes"},
             {"log", "web1", "-n", "0"},
             {"help", "nosuch"},
             {}}) {
        auto u = vmha(args, dir.path());
        EXPECT_EQ(u.exit_code, 64) << describe(args) << ": " << u.output;
    }

    // Help for every verb, both ways; the exit codes are documented in it.
    for (const char* verb : {"status", "state", "start", "stop", "restart", "swap", "prim", "second", "failover",
                             "resync", "verify", "log", "config"}) {
        auto h = vmha({"help", verb}, dir.path());
        EXPECT_EQ(h.exit_code, 0) << verb << ": " << h.output;
        EXPECT_TRUE(has(h.output, verb)) << h.output;
        auto h2 = vmha({verb, "--help"}, dir.path());
        EXPECT_EQ(h2.exit_code, 0) << verb;
    }
    auto top = vmha({"--help"}, dir.path());
    EXPECT_EQ(top.exit_code, 0);
    EXPECT_TRUE(has(top.output, "STOP 0, WAIT 1, ALONE 2, PRIM 3, SECOND 4")) << top.output;
    EXPECT_TRUE(has(vmha({"help", "prim"}, dir.path()).output, "--force"));
}

TEST(VmhaCli, BashCompletionCompletesVerbsOptionsAndModules) {
    TempDir dir;
    auto complete = [&](const std::string& line) {
        const std::string script = "source " + std::string(VMHA_COMPLETION) +
                                   "; _vmha_modules() { echo web1 db1; }; COMP_WORDS=(" + line +
                                   "); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _vmha; echo \"${COMPREPLY[*]}\"";
        return run_tool({"bash", "-c", script}, dir.path(), 30s);
    };
    auto r = complete("vmha pr");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_TRUE(has(r.output, "prim")) << r.output;
    EXPECT_TRUE(has(complete("vmha prim --f").output, "--force"));
    EXPECT_TRUE(has(complete("vmha resync web1 --w").output, "--watch"));
    EXPECT_TRUE(has(complete("vmha failover o").output, "on off"));
    EXPECT_TRUE(has(complete("vmha --socket /x swap w").output, "web1"));
    EXPECT_FALSE(has(complete("vmha swap w").output, "db1"));
    EXPECT_TRUE(has(complete("vmha swap web1 --a").output, "--at"));
    EXPECT_TRUE(has(complete("vmha sch").output, "schedule"));
    EXPECT_TRUE(has(complete("vmha schedule web1 --c").output, "--cancel"));
}

TEST(VmhaCli, StateStatusRestartVerifyResyncAndForwarding) {
    Cluster c;
    // Before any start: the module runs nowhere; restart is refused with the reason.
    for (const char* n : {"hv1", "hv2"}) c.start_vmhad(n);
    for (const char* n : {"hv1", "hv2"}) ASSERT_TRUE(c.wait_admin(n));
    EXPECT_EQ(c.run_vmha("hv1", {"state", "web1"}).exit_code, 0);  // STOP
    ASSERT_TRUE(poll_until(30s, [&] { return c.module_status("hv1")["peer"]["channel"] == "up"; }));
    auto r = c.run_vmha("hv1", {"restart", "web1"});
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_TRUE(has(r.output, "does not run the VM on hv1")) << r.output;
    EXPECT_TRUE(has(r.output, "(invalid_argument)")) << r.output;
    start_pair(c, true);

    // state: SafeKit's exit codes, and its JSON.
    r = c.run_vmha("hv1", {"state", "web1"});
    EXPECT_EQ(r.exit_code, 3) << r.output;
    EXPECT_TRUE(has(r.output, "web1 on hv1: PRIM")) << r.output;
    r = c.run_vmha("hv2", {"state", "web1", "--json"});
    EXPECT_EQ(r.exit_code, 4) << r.output;
    auto j = json_of(r);
    EXPECT_EQ(j["state"], "SECOND");
    EXPECT_EQ(j["node"], "hv2");
    EXPECT_EQ(j["exit_code"], 4);
    EXPECT_TRUE(j["reason"].is_string());
    EXPECT_EQ(c.run_vmha("hv1", {"state", "nosuch"}).exit_code, 6);

    // status --json: the documented keys, failover on, no operator choice.
    j = c.module_status("hv1");
    for (const char* key : {"name", "state", "reason", "rule", "data_state", "peer", "replication", "restarts",
                            "checkers", "vm", "imagesyncd", "failover", "operator", "verify"}) {
        EXPECT_TRUE(j.contains(key)) << key << " in " << j.dump();
    }
    EXPECT_EQ(j["failover"], true);
    EXPECT_TRUE(j["operator"].is_null());
    r = c.run_vmha("hv1", {"status"});
    EXPECT_TRUE(has(r.output, "FAILOVER")) << r.output;

    // An unknown module: refused, with the code in --json.
    r = c.run_vmha("hv2", {"restart", "nosuch", "--json"});
    EXPECT_EQ(r.exit_code, 1);
    j = json_of(r);
    EXPECT_EQ(j["ok"], false);
    EXPECT_EQ(j["code"], "not_found");
    EXPECT_TRUE(has(j.value("error", ""), "\"nosuch\" is not configured on hv2")) << r.output;

    // restart on either node restarts the VM where it runs (hv1): forwarded from hv2.
    r = c.run_vmha("hv2", {"restart", "web1", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    j = json_of(r);
    EXPECT_EQ(j["node"], "hv1");
    EXPECT_EQ(j["module"], "web1");
    EXPECT_TRUE(has(j.value("message", ""), "restarted on hv1")) << r.output;
    r = c.run_vmha("hv1", {"restart", "web1"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_TRUE(has(r.output, "the VM restarted on hv1")) << r.output;
    EXPECT_EQ(c.state("hv1"), "PRIM");  // no failover
    EXPECT_EQ(c.state("hv2"), "SECOND");
    EXPECT_TRUE(poll_until(30s, [&] { return c.module_status("hv1")["vm"]["state"] == "running"; }));

    // Unsafe or pointless role commands are refused with the reason.
    r = c.run_vmha("hv2", {"prim", "web1"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_TRUE(has(r.output, "hv1 runs the VM")) << r.output;
    r = c.run_vmha("hv1", {"second", "web1"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_TRUE(has(r.output, "runs the VM on hv1")) << r.output;
    r = c.run_vmha("hv1", {"prim", "web1"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_TRUE(has(r.output, "already runs the VM on hv1")) << r.output;

    // verify: where the VM runs, from either node; identical copies exit 0.
    r = c.run_vmha("hv2", {"verify", "web1", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    j = json_of(r);
    EXPECT_EQ(j["node"], "hv1");
    EXPECT_EQ(j["compared_bytes"], 64u << 20);
    EXPECT_EQ(j["differing_bytes"], 0u);
    EXPECT_TRUE(j["ranges"].is_array());
    r = c.run_vmha("hv1", {"verify", "web1", "--watch", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    auto lines = json_lines(r);
    ASSERT_FALSE(lines.empty()) << r.output;
    EXPECT_EQ(lines.back()["event"], "done");
    EXPECT_EQ(lines.back()["differing_bytes"], 0u);
    r = c.run_vmha("hv1", {"verify", "web1"});
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_TRUE(has(r.output, "64.0 MiB compared, 0 B differ")) << r.output;

    // resync: started where the VM runs; --watch until the peer is in sync.
    r = c.run_vmha("hv2", {"resync", "web1", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    j = json_of(r);
    EXPECT_EQ(j["node"], "hv1");
    EXPECT_EQ(j["full"], false);
    EXPECT_TRUE(j["dirty_bytes"].is_number());
    r = c.run_vmha("hv2", {"resync", "web1", "--full", "--watch", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    lines = json_lines(r);
    ASSERT_FALSE(lines.empty()) << r.output;
    EXPECT_EQ(lines.back()["event"], "done");
    EXPECT_EQ(lines.back()["ok"], true);
    r = c.run_vmha("hv1", {"resync", "web1", "--watch"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_TRUE(has(r.output, "resync of module \"web1\" done")) << r.output;

    // swap from the secondary: forwarded to hv1, which hands the VM to hv2.
    r = c.run_vmha("hv2", {"swap", "web1", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(json_of(r)["swapped"], true);
    ASSERT_TRUE(c.wait_state("hv2", "PRIM", 60s));
    ASSERT_TRUE(c.wait_state("hv1", "SECOND", 60s));

    // log: who ran what when, transitions with rules and reasons.
    r = c.run_vmha("hv1", {"log", "web1", "-n", "200", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    lines = json_lines(r);
    bool forwarded_restart = false, transition = false, verify_cmd = false;
    for (const auto& e : lines) {
        EXPECT_TRUE(e["seq"].is_number() && e["time"].is_string() && e["kind"].is_string()) << e.dump();
        if (e["kind"] == "command" && e["verb"] == "restart" && has(e.value("user", ""), "on hv2")) {
            forwarded_restart = true;
            EXPECT_TRUE(has(e.value("user", ""), "root")) << e.dump();
            EXPECT_EQ(e["ok"], true);
        }
        if (e["kind"] == "command" && e["verb"] == "verify") verify_cmd = true;
        if (e["kind"] == "transition" && e["to"] == "PRIM" && e["rule"].is_number()) transition = true;
    }
    EXPECT_TRUE(forwarded_restart) << r.output;
    EXPECT_TRUE(transition) << r.output;
    EXPECT_TRUE(verify_cmd) << r.output;
    r = c.run_vmha("hv1", {"log", "web1", "-n", "1", "--json"});
    EXPECT_EQ(json_lines(r).size(), 1u) << r.output;
    r = c.run_vmha("hv2", {"log", "web1"});
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_TRUE(has(r.output, "transition")) << r.output;
    EXPECT_TRUE(has(r.output, "ran `swap` (on hv1): done")) << r.output;
    EXPECT_TRUE(has(r.output, "(rule ")) << r.output;

    // log --follow prints new entries as they come (ended by this test, by PID).
    const fs::path out = c.dir() / "follow.out";
    struct Follower {
        pid_t pid;
        ~Follower() {
            if (pid > 0) {
                ::kill(pid, SIGKILL);
                ::waitpid(pid, nullptr, 0);
            }
        }
    } follower{spawn({VMHA_PATH, "--socket", (c.node_dir("hv1") / "run/admin.sock").string(), "log", "web1", "-n",
                      "1", "--follow"},
                     out)};
    ASSERT_GT(follower.pid, 0);
    EXPECT_TRUE(poll_until(20s, [&] { return !read_file(out).empty(); }));
    r = c.run_vmha("hv1", {"failover", "off", "web1"});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_TRUE(poll_until(20s, [&] { return has(read_file(out), "ran `failover off`: done"); })) << read_file(out);
}

TEST(VmhaCli, FailoverOffKeepsTheVmFromMovingAndPrimStartsItByHand) {
    Cluster c;
    start_pair(c);
    auto r = c.run_vmha("hv2", {"failover", "off", "web1", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    auto j = json_of(r);
    EXPECT_EQ(j["failover"], "off");
    EXPECT_EQ(j["modules"][0]["nodes"]["hv1"], "set");
    EXPECT_EQ(j["modules"][0]["nodes"]["hv2"], "set");
    EXPECT_EQ(c.module_status("hv1")["failover"], false);
    EXPECT_EQ(c.module_status("hv2")["failover"], false);

    // Kept across a restart of vmhad.
    c.kill_vmhad("hv2", SIGTERM);
    c.start_vmhad("hv2");
    ASSERT_TRUE(c.wait_admin("hv2"));
    EXPECT_EQ(c.module_status("hv2")["failover"], false);
    ASSERT_TRUE(c.wait_state("hv2", "SECOND", 60s));
    ASSERT_TRUE(poll_until(60s, [&] { return c.module_status("hv2")["data_state"] == "UpToDate"; }));

    // hv1 dies: hv2 does not take the VM over, and says why.
    c.kill_vmhad("hv1", SIGKILL);
    c.kill_imagesyncd("hv1");
    ASSERT_TRUE(poll_until(60s, [&] { return c.module_status("hv2")["rule"] == 64; }))
        << c.module_status("hv2").dump();
    j = c.module_status("hv2");
    EXPECT_EQ(j["state"], "WAIT");
    EXPECT_TRUE(has(j.value("reason", ""), "failover is off")) << j.dump();

    // restart refused: the VM runs nowhere hv2 can reach.
    r = c.run_vmha("hv2", {"restart", "web1"});
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_TRUE(has(r.output, "control channel is down")) << r.output;

    // The operator starts it by hand: `prim` on UpToDate data.
    r = c.run_vmha("hv2", {"prim", "web1", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(json_of(r)["node"], "hv2");
    ASSERT_TRUE(c.wait_state("hv2", "ALONE", 60s));

    r = c.run_vmha("hv2", {"failover", "on", "web1"});
    EXPECT_EQ(r.exit_code, 1) << r.output;  // hv1 cannot be told
    EXPECT_TRUE(has(r.output, "hv2: set")) << r.output;
    EXPECT_TRUE(has(r.output, "hv1: not set")) << r.output;
    EXPECT_EQ(c.module_status("hv2")["failover"], true);

    r = c.run_vmha("hv2", {"log", "web1"});
    EXPECT_TRUE(has(r.output, "ran `prim`: done")) << r.output;
    EXPECT_TRUE(has(r.output, "ran `failover off`: done")) << r.output;
    EXPECT_TRUE(has(r.output, "(rule 62)")) << r.output;
}

TEST(VmhaCli, PrimRefusesOutdatedDataUntilForcedAndConfirmed) {
    Cluster c;
    start_pair(c);
    // Both stop; hv2 starts again as secondary (`second`: it does not take the VM), and its copy
    // is marked Outdated (as when hv1 went on alone without it).
    auto r = c.run_vmha("hv2", {"stop", "web1"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    ASSERT_TRUE(c.wait_state("hv2", "STOP", 60s));
    r = c.run_vmha("hv1", {"stop", "web1"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    ASSERT_TRUE(c.wait_state("hv1", "STOP", 60s));
    r = c.run_vmha("hv2", {"second", "web1", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(json_of(r)["node"], "hv2");
    ASSERT_TRUE(poll_until(30s, [&] { return c.module_status("hv2")["rule"] == 64; })) << c.module_status("hv2").dump();
    EXPECT_EQ(c.module_status("hv2")["operator"], "second");
    ASSERT_TRUE(poll_until(30s, [&] {
        auto reply = c.imagesync_control("hv2", {{"verb", "outdate"}});
        return reply.is_object() && reply.value("ok", false);
    }));
    ASSERT_TRUE(poll_until(30s, [&] { return c.module_status("hv2")["data_state"] == "Outdated"; }));
    ASSERT_TRUE(c.wait_state("hv2", "WAIT", 30s));

    // Plain prim: refused, with the reason and the way out.
    r = c.run_vmha("hv2", {"prim", "web1", "--json"});
    EXPECT_EQ(r.exit_code, 1) << r.output;
    auto j = json_of(r);
    EXPECT_EQ(j["code"], "not_up_to_date");
    EXPECT_TRUE(has(j.value("error", ""), "Outdated")) << r.output;
    EXPECT_TRUE(has(j.value("error", ""), "--force")) << r.output;

    // swap: refused, the VM runs nowhere.
    r = c.run_vmha("hv2", {"swap", "web1"});
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_TRUE(has(r.output, "does not run the VM on hv2")) << r.output;

    // --force without a terminal and without --yes: refused (64), having said what it discards.
    r = c.run_vmha("hv2", {"prim", "web1", "--force"});
    EXPECT_EQ(r.exit_code, 64) << r.output;
    EXPECT_TRUE(has(r.output, "discards: the data on hv2 is Outdated")) << r.output;
    EXPECT_TRUE(has(r.output, "--yes")) << r.output;
    EXPECT_EQ(c.state("hv2"), "WAIT");

    r = c.run_vmha("hv2", {"prim", "web1", "--force", "--yes", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    j = json_of(r);
    EXPECT_EQ(j["preview"]["data_state"], "Outdated");
    EXPECT_TRUE(j["preview"]["discards"].is_array());
    ASSERT_TRUE(c.wait_state("hv2", "ALONE", 60s));
    EXPECT_EQ(c.module_status("hv2")["data_state"], "UpToDate");
    EXPECT_TRUE(poll_until(30s, [&] { return c.module_status("hv2")["vm"]["state"] == "running"; }));

    // swap to a stopped peer: refused with the reason.
    r = c.run_vmha("hv2", {"swap", "web1"});
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_TRUE(has(r.output, "hv1 cannot take the VM over")) << r.output;

    // restart from the stopped node goes where the VM runs.
    r = c.run_vmha("hv1", {"restart", "web1"});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_TRUE(has(r.output, "restarted on hv2")) << r.output;

    // prim on the stopped node while hv2 runs the VM: refused before anything starts or is asked.
    for (const auto& args : std::vector<std::vector<std::string>>{{"prim", "web1"}, {"prim", "web1", "--force"}}) {
        r = c.run_vmha("hv1", args);
        EXPECT_EQ(r.exit_code, 1) << r.output;
        EXPECT_TRUE(has(r.output, "hv2 runs the VM")) << r.output;
        EXPECT_FALSE(has(r.output, "discards:")) << r.output;
    }
    EXPECT_EQ(c.state("hv1"), "STOP");
    EXPECT_NE(c.module_status("hv1")["imagesyncd"]["state"], "running");

    r = c.run_vmha("hv2", {"log", "web1", "--json"});
    bool forced = false;
    for (const auto& e : json_lines(r)) {
        if (e["kind"] == "command" && e["verb"] == "prim" && e.contains("options") && e["options"].value("force", false)) {
            forced = e.value("ok", false);
        }
    }
    EXPECT_TRUE(forced) << r.output;
}


// The plan of a module as `vmha schedule MODULE --json` prints it on a node.
nlohmann::json plan(Cluster& c, const std::string& node) {
    auto r = c.run_vmha(node, {"schedule", "web1", "--json"});
    auto j = nlohmann::json::parse(r.output, nullptr, false);
    if (r.exit_code != 0 || !j.is_object() || !j["modules"].is_array() || j["modules"].empty()) return nullptr;
    return j["modules"][0];
}

// The outcome of swap `id` in a node's plan ("" if it has no such swap).
std::string swap_outcome(Cluster& c, const std::string& node, const std::string& id) {
    const auto p = plan(c, node);
    if (!p.is_object()) return "";
    for (const auto& s : p["swaps"]) {
        if (s["id"] == id) return s["outcome"].get<std::string>();  // p outlives the loop
    }
    return "";
}

TEST(VmhaCli, ScheduledSwapsRunWhereTheVmRunsOnceAndSurviveRestarts) {
    Cluster c;
    start_pair(c);
    // Nothing planned; manual failback.
    auto p = plan(c, "hv2");
    ASSERT_TRUE(p.is_object());
    EXPECT_EQ(p["mode"], "manual");
    EXPECT_TRUE(p["failback"].is_null());
    EXPECT_TRUE(p["swaps"].empty());
    EXPECT_EQ(p["timezone"], "UTC");

    // Bad times and options: refused with the reason, nothing scheduled.
    auto r = c.run_vmha("hv2", {"swap", "web1", "--at", "2020-01-01 00:00"});
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_TRUE(has(r.output, "is not in the future")) << r.output;
    r = c.run_vmha("hv2", {"swap", "web1", "--at", "next tuesday", "--json"});
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_EQ(json_of(r)["code"], "invalid_argument");
    r = c.run_vmha("hv2", {"swap", "web1", "--at", "+1h", "--to", "hv9"});
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_TRUE(has(r.output, "\"hv9\" is not a node of module \"web1\"")) << r.output;
    r = c.run_vmha("hv2", {"swap", "web1", "--to", "hv1"});
    EXPECT_EQ(r.exit_code, 64) << r.output;
    r = c.run_vmha("hv2", {"schedule", "--cancel", "x"});
    EXPECT_EQ(r.exit_code, 64) << r.output;
    EXPECT_TRUE(plan(c, "hv2")["swaps"].empty());

    // Typed on hv2, which does not run the VM: the VM is to move to hv2. Both nodes know it.
    r = c.run_vmha("hv2", {"swap", "web1", "--at", "+6s", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    auto j = json_of(r);
    const std::string id = j["id"];
    EXPECT_EQ(j["to"], "hv2");
    EXPECT_EQ(j["peer_informed"], true);
    EXPECT_TRUE(j["at"]["local"].is_string());
    // A second one, an hour later, cancelled from the other node.
    r = c.run_vmha("hv2", {"swap", "web1", "--at", "+1h", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const std::string later = json_of(r)["id"];
    ASSERT_TRUE(poll_until(20s, [&] { return swap_outcome(c, "hv1", later) == "pending"; }));
    r = c.run_vmha("hv1", {"schedule", "web1", "--cancel", later});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_TRUE(has(r.output, "cancelled")) << r.output;
    EXPECT_TRUE(poll_until(20s, [&] { return swap_outcome(c, "hv2", later) == "cancelled"; }));
    r = c.run_vmha("hv1", {"schedule", "web1", "--cancel", later});
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_TRUE(has(r.output, "is cancelled already")) << r.output;

    // At its time, hv1 (which runs the VM) hands it over; both nodes record it done, by hv1.
    ASSERT_TRUE(c.wait_state("hv2", "PRIM", 60s));
    ASSERT_TRUE(c.wait_state("hv1", "SECOND", 60s));
    EXPECT_TRUE(poll_until(20s, [&] { return swap_outcome(c, "hv1", id) == "done" && swap_outcome(c, "hv2", id) == "done"; }));
    const auto after = plan(c, "hv2");
    for (const auto& s : after["swaps"]) {
        if (s["id"] == id) { EXPECT_EQ(s["settled_by"], "hv1") << s.dump(); }
    }
    r = c.run_vmha("hv1", {"schedule", "web1"});
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_TRUE(has(r.output, "done: the VM runs on hv2")) << r.output;
    EXPECT_TRUE(has(r.output, "failback: manual")) << r.output;

    // A pending swap survives a restart of vmhad on both nodes.
    r = c.run_vmha("hv1", {"swap", "web1", "--at", "+2h", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const std::string kept = json_of(r)["id"];
    EXPECT_EQ(json_of(r)["to"], "hv1");
    ASSERT_TRUE(poll_until(20s, [&] { return swap_outcome(c, "hv2", kept) == "pending"; }));
    for (const char* n : {"hv1", "hv2"}) {
        c.kill_vmhad(n, SIGTERM);
        c.start_vmhad(n);
    }
    for (const char* n : {"hv1", "hv2"}) ASSERT_TRUE(c.wait_admin(n));
    EXPECT_EQ(swap_outcome(c, "hv1", kept), "pending");
    EXPECT_EQ(swap_outcome(c, "hv2", kept), "pending");

    // Unsafe at its time: the peer stopped. Skipped, with the reason, and nothing moves. (The
    // test driver's domains live in vmhad's process: after the restarts the pair settles again,
    // on either node.)
    std::string runs, other;
    ASSERT_TRUE(poll_until(60s, [&] {
        const auto a = c.state("hv1"), b = c.state("hv2");
        if (a == "PRIM" && b == "SECOND") runs = "hv1", other = "hv2";
        if (b == "PRIM" && a == "SECOND") runs = "hv2", other = "hv1";
        return !runs.empty();
    }));
    r = c.run_vmha(other, {"stop", "web1"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    r = c.run_vmha(runs, {"swap", "web1", "--at", "+3s", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const std::string unsafe = json_of(r)["id"];
    EXPECT_TRUE(poll_until(30s, [&] { return swap_outcome(c, runs, unsafe) == "skipped"; }));
    const auto skipped = plan(c, runs);
    for (const auto& s : skipped["swaps"]) {
        if (s["id"] == unsafe) {
            EXPECT_TRUE(has(s.value("reason", ""), other + " cannot take the VM over now")) << s.dump();
        }
    }
    EXPECT_EQ(c.state(runs), "ALONE");
    // The journal says who scheduled what, and what came of it.
    r = c.run_vmha("hv2", {"log", "web1", "-n", "200"});
    EXPECT_TRUE(has(r.output, "ran `swap --at \"+6s\"`: done")) << r.output;
    r = c.run_vmha(runs, {"log", "web1", "-n", "200"});
    EXPECT_TRUE(has(r.output, "skipped: module \"web1\": " + other + " cannot take the VM over now")) << r.output;
    r = c.run_vmha("hv1", {"log", "web1", "-n", "200"});
    EXPECT_TRUE(has(r.output, "swap " + id + " to hv2 (due ")) << r.output;
    EXPECT_TRUE(has(r.output, "done: the VM runs on hv2")) << r.output;
}

TEST(VmhaCli, ScheduledFailbackMovesTheVmBackToThePreferredNode) {
    ClusterOptions o;
    const std::string failback =
        "failback:\n  mode: scheduled\n  preferred_node: hv1\n  schedule: \"* * * * *\"\n  timezone: Europe/Paris\n";
    o.module_suffix = {{"hv1", failback}, {"hv2", failback}};
    Cluster c(o);
    start_pair(c);
    auto p = plan(c, "hv2");
    ASSERT_TRUE(p.is_object());
    EXPECT_EQ(p["mode"], "scheduled");
    EXPECT_EQ(p["timezone"], "Europe/Paris");
    EXPECT_EQ(p["failback"]["schedule"], "* * * * *");
    EXPECT_EQ(p["failback"]["next"].size(), 3u);
    // Move the VM away from the preferred node; within a minute, hv2 moves it back.
    auto r = c.run_vmha("hv1", {"swap", "web1"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    ASSERT_TRUE(c.wait_state("hv2", "PRIM", 60s));
    ASSERT_TRUE(c.wait_state("hv1", "PRIM", 150s));
    ASSERT_TRUE(c.wait_state("hv2", "SECOND", 60s));
    EXPECT_TRUE(poll_until(20s, [&] {
        const auto p2 = plan(c, "hv2");
        for (const auto& e : p2["history"]) {
            if (e["job"] == "failback to hv1" && e["outcome"] == "done") return true;
        }
        return false;
    })) << plan(c, "hv2").dump(2);
    // The preferred node never acts on failback times.
    EXPECT_TRUE(plan(c, "hv1")["history"].empty()) << plan(c, "hv1").dump(2);
}

}  // namespace
}  // namespace vmhad_test
