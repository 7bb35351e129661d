// Two real vmhad on loopback (libvirt's test:///default driver as each node's hypervisor, real
// imagesyncd replicating between the nodes): pairing, roles, the health endpoints, failover when
// a node dies, its return, swap, and the refusals (wrong certificate, different config).
#include <algorithm>
#include <fstream>

#include "cluster.h"

namespace vmhad_test {
namespace {

void start_both(Cluster& c) {
    for (const char* n : {"hv1", "hv2"}) c.start_vmhad(n);
    for (const char* n : {"hv1", "hv2"}) ASSERT_TRUE(c.wait_admin(n));
    for (const char* n : {"hv1", "hv2"}) {
        auto r = c.run_vmha(n, {"start", "web1"});
        ASSERT_EQ(r.exit_code, 0) << r.output;
    }
}

// The witness and both nodes started: hv1 PRIM holding the module's lease, hv2 SECOND without it.
void start_with_lease(Cluster& c) {
    ASSERT_TRUE(c.start_witness());
    start_both(c);
    ASSERT_TRUE(c.wait_state("hv1", "PRIM"));
    ASSERT_TRUE(c.wait_state("hv2", "SECOND"));
    auto lease = [&](const char* n) { return c.module_status(n)["lease"]; };
    ASSERT_TRUE(poll_until(60s, [&] { return lease("hv1").value("held", false); })) << lease("hv1").dump();
    EXPECT_FALSE(lease("hv2").value("held", true)) << lease("hv2").dump();
}

TEST(VmhadPair, PairsRunsTheVmOnThePreferredNodeAndAnswersHealthChecks) {
    Cluster c;
    start_both(c);
    ASSERT_TRUE(c.wait_state("hv1", "PRIM"));
    ASSERT_TRUE(c.wait_state("hv2", "SECOND"));
    auto s1 = c.module_status("hv1");
    EXPECT_EQ(s1["data_state"], "UpToDate");
    EXPECT_EQ(s1["peer"]["state"], "SECOND");
    EXPECT_EQ(s1["peer"]["liveness"], "alive");
    EXPECT_TRUE(poll_until(30s, [&] { return c.module_status("hv1")["vm"]["state"] == "running"; }));
    EXPECT_TRUE(poll_until(30s, [&] { return c.module_status("hv2")["vm"]["state"] == "absent"; }))
        << c.module_status("hv2").dump();
    EXPECT_EQ(s1["replication"]["connection"], "connected");
    ASSERT_TRUE(poll_until(30s, [&] { return c.module_status("hv2")["data_state"] == "UpToDate"; }));

    EXPECT_EQ(c.http("hv1", "/health/web1"), 200);
    EXPECT_EQ(c.http("hv2", "/health/web1"), 503);
    EXPECT_EQ(c.http("hv1", "/var/modules/web1/ready.txt"), 200);
    EXPECT_EQ(c.http("hv2", "/var/modules/web1/ready.txt"), 404);
    EXPECT_EQ(c.http("hv1", "/health/nosuch"), 404);

    // The human status names both nodes' states.
    auto human = c.run_vmha("hv1", {"status"});
    EXPECT_EQ(human.exit_code, 0);
    EXPECT_NE(human.output.find("PRIM"), std::string::npos) << human.output;
    EXPECT_NE(human.output.find("hv2 SECOND"), std::string::npos) << human.output;
}

TEST(VmhadPair, FailsOverWhenTheRunningNodeDiesAndTakesItBackBySwap) {
    Cluster c;
    start_both(c);
    ASSERT_TRUE(c.wait_state("hv1", "PRIM"));
    ASSERT_TRUE(c.wait_state("hv2", "SECOND"));
    ASSERT_TRUE(poll_until(30s, [&] { return c.module_status("hv2")["data_state"] == "UpToDate"; }));

    // hv1 dies as a whole: vmhad and imagesyncd (its test-driver VM lives inside vmhad).
    c.kill_vmhad("hv1", SIGKILL);
    c.kill_imagesyncd("hv1");
    ASSERT_TRUE(c.wait_state("hv2", "ALONE", 60s));
    EXPECT_TRUE(poll_until(30s, [&] { return c.module_status("hv2")["vm"]["state"] == "running"; }))
        << c.module_status("hv2").dump();
    EXPECT_EQ(c.http("hv2", "/health/web1"), 200);
    EXPECT_EQ(c.module_status("hv2")["peer"]["liveness"], "lost");

    // hv1 returns: SECOND, resynced from hv2, then the pair is PRIM/SECOND again.
    c.start_vmhad("hv1");
    ASSERT_TRUE(c.wait_admin("hv1"));
    ASSERT_TRUE(c.wait_state("hv1", "SECOND", 90s));
    ASSERT_TRUE(c.wait_state("hv2", "PRIM", 60s));
    ASSERT_TRUE(poll_until(60s, [&] { return c.module_status("hv1")["data_state"] == "UpToDate"; }));

    // Swap back to hv1 by command.
    auto swap = c.run_vmha("hv2", {"swap", "web1"});
    ASSERT_EQ(swap.exit_code, 0) << swap.output;
    ASSERT_TRUE(c.wait_state("hv1", "PRIM", 60s));
    ASSERT_TRUE(c.wait_state("hv2", "SECOND", 60s));
    EXPECT_EQ(c.http("hv1", "/health/web1"), 200);
    EXPECT_EQ(c.http("hv2", "/health/web1"), 503);
}

TEST(VmhadPair, FailsBackAutomaticallyToThePreferredNodeOnceItIsStable) {
    ClusterOptions o;
    const std::string failback = "failback:\n  mode: automatic\n  preferred_node: hv1\n  stable_for: 3s\n";
    o.module_suffix["hv1"] = failback;
    o.module_suffix["hv2"] = failback;
    Cluster c(o);
    start_both(c);
    ASSERT_TRUE(c.wait_state("hv1", "PRIM"));
    ASSERT_TRUE(poll_until(30s, [&] { return c.module_status("hv2")["data_state"] == "UpToDate"; }));

    c.kill_vmhad("hv1", SIGKILL);
    c.kill_imagesyncd("hv1");
    ASSERT_TRUE(c.wait_state("hv2", "ALONE", 60s));

    // hv1 returns, resyncs, and once it has been UpToDate and in sync for stable_for, hv2
    // hands the VM back to it by itself.
    c.start_vmhad("hv1");
    ASSERT_TRUE(c.wait_admin("hv1"));
    ASSERT_TRUE(c.wait_state("hv1", "PRIM", 120s)) << c.module_status("hv2").dump();
    ASSERT_TRUE(c.wait_state("hv2", "SECOND", 60s));
    EXPECT_EQ(c.http("hv1", "/health/web1"), 200);
    EXPECT_EQ(c.http("hv2", "/health/web1"), 503);
}

// With a real vmha-witness: the running node holds the module's lease; the witness going away
// changes nothing while the nodes see each other; after the running node dies, its peer takes
// the VM over once the witness grants it the lease.
TEST(VmhadPair, WithAWitnessTheRunningNodeHoldsTheLeaseAndTheSurvivorTakesItOver) {
    ClusterOptions o;
    o.witness = true;
    Cluster c(o);
    ASSERT_NO_FATAL_FAILURE(start_with_lease(c));
    auto lease = [&](const char* n) { return c.module_status(n)["lease"]; };
    EXPECT_TRUE(lease("hv1").value("peer_agrees", false)) << lease("hv1").dump();

    // The witness dies: the lease lapses on hv1, which keeps the VM on its peer's agreement.
    c.stop_witness();
    ASSERT_TRUE(poll_until(30s, [&] { return !lease("hv1").value("held", true); })) << lease("hv1").dump();
    EXPECT_EQ(c.state("hv1"), "PRIM") << c.module_status("hv1").dump();
    EXPECT_EQ(c.state("hv2"), "SECOND");

    // It returns with its grants (its state file): hv1 renews.
    ASSERT_TRUE(c.start_witness());
    ASSERT_TRUE(poll_until(30s, [&] { return lease("hv1").value("held", false); })) << lease("hv1").dump();
    ASSERT_TRUE(poll_until(30s, [&] { return c.module_status("hv2")["data_state"] == "UpToDate"; }));

    // vmhad keeps imagesyncd's write deadline ahead of it (the lease, or the peer's agreement)...
    auto deadline = [&] { return c.imagesync_control("hv1", {{"verb", "status"}})["write_lease_ms_left"]; };
    ASSERT_TRUE(poll_until(30s, [&] { return deadline().is_number() && deadline().get<std::int64_t>() > 0; }))
        << deadline().dump();
    // ...so that when hv1's vmhad dies, its imagesyncd stops taking writes once the lease could
    // have passed to hv2 (EPERM to the client; reads go on), though it is still primary.
    c.kill_vmhad("hv1", SIGKILL);
    ASSERT_TRUE(poll_until(60s, [&] { return deadline() == 0; })) << deadline().dump();
    const std::string uri = "nbd+unix:///web1?socket=" + c.nbd_socket("hv1").string();
    auto w = run_tool({"qemu-io", "-f", "raw", "-c", "write -P 0x33 0 4k", uri}, c.dir(), 60s);
    EXPECT_NE(w.output.find("Operation not permitted"), std::string::npos) << w.output;
    auto rd = run_tool({"qemu-io", "-f", "raw", "-c", "read 0 4k", uri}, c.dir(), 60s);
    EXPECT_EQ(rd.output.find("error"), std::string::npos) << rd.output;
    EXPECT_EQ(c.imagesync_control("hv1", {{"verb", "status"}})["role"], "primary");

    // hv1 dies as a whole: hv2 waits for hv1's lease to expire at the witness, then runs the VM.
    c.kill_imagesyncd("hv1");
    ASSERT_TRUE(c.wait_state("hv2", "ALONE", 90s)) << c.module_status("hv2").dump();
    EXPECT_TRUE(lease("hv2").value("held", false)) << lease("hv2").dump();
    EXPECT_EQ(c.http("hv2", "/health/web1"), 200);
}

// The same lease rules with the leases in a real etcd: the running node holds the lease, and
// when it dies the survivor takes over only through etcd.
TEST(VmhadPair, WithAnEtcdWitnessTheSurvivorTakesOverThroughTheLease) {
    IMAGESYNC_REQUIRE_TOOL("etcd");
    ClusterOptions o;
    o.witness = true;
    o.etcd = true;
    Cluster c(o);
    ASSERT_NO_FATAL_FAILURE(start_with_lease(c));
    auto lease = [&](const char* n) { return c.module_status(n)["lease"]; };
    ASSERT_TRUE(poll_until(30s, [&] { return c.module_status("hv2")["data_state"] == "UpToDate"; }));
    c.kill_vmhad("hv1", SIGKILL);
    c.kill_imagesyncd("hv1");
    ASSERT_TRUE(c.wait_state("hv2", "ALONE", 90s)) << c.module_status("hv2").dump();
    EXPECT_TRUE(lease("hv2").value("held", false)) << lease("hv2").dump();
}

// The fencing hook: when hv1 dies, hv2 runs the hook (with {peer} and {module} filled in) and
// starts the VM only once it succeeds; a failing hook keeps it WAIT with the hook's reason, and
// is run again. Never run while the peer is alive.
TEST(VmhadPair, TheFencingHookGatesATakeoverFromASilentPeer) {
    TempDir hook;
    const fs::path script = hook.path() / "fence.sh";
    const fs::path calls = hook.path() / "calls";
    const fs::path exit_code = hook.path() / "exit";
    std::ofstream(script) << "echo \"$1 $2\" >> " << calls.string() << "\n"
                          << "code=$(cat " << exit_code.string() << ")\n"
                          << "[ \"$code\" = 0 ] || echo \"BMC of $1 unreachable\" >&2\n"
                          << "exit $code\n";
    std::ofstream(exit_code) << "1\n";
    ClusterOptions o;
    const std::string fencing = "fencing:\n  command: [/bin/sh, " + script.string() +
                                ", \"{peer}\", \"{module}\"]\n  timeout: 10s\n";
    o.module_suffix = {{"hv1", fencing}, {"hv2", fencing}};
    Cluster c(o);
    start_both(c);
    ASSERT_TRUE(c.wait_state("hv1", "PRIM"));
    ASSERT_TRUE(c.wait_state("hv2", "SECOND"));
    ASSERT_TRUE(poll_until(30s, [&] { return c.module_status("hv2")["data_state"] == "UpToDate"; }));
    EXPECT_EQ(read_file(calls), "") << "the hook ran while the peer was alive";

    c.kill_vmhad("hv1", SIGKILL);
    c.kill_imagesyncd("hv1");
    ASSERT_TRUE(poll_until(60s, [&] { return c.module_status("hv2")["rule"] == 67; })) << c.module_status("hv2").dump();
    ASSERT_TRUE(poll_until(30s, [&] {
        return c.module_status("hv2")["reason"].get<std::string>().find("exited with status 1: BMC of hv1 unreachable") !=
               std::string::npos;
    })) << c.module_status("hv2").dump();
    EXPECT_EQ(c.state("hv2"), "WAIT");
    EXPECT_EQ(read_file(calls).substr(0, 9), "hv1 web1\n");

    std::ofstream(exit_code, std::ios::trunc) << "0\n";
    ASSERT_TRUE(c.wait_state("hv2", "ALONE", 60s)) << c.module_status("hv2").dump();
    EXPECT_TRUE(c.module_status("hv2")["fencing"]["peer_fenced"].get<bool>());
    const std::string ran = read_file(calls);
    EXPECT_GE(std::count(ran.begin(), ran.end(), '\n'), 2) << ran;
    auto log = c.run_vmha("hv2", {"log", "web1", "-n", "200"});
    EXPECT_NE(log.output.find("the fencing hook fenced hv1"), std::string::npos) << log.output;
}

TEST(VmhadPair, RefusesAPeerWithACertificateFromAnotherCa) {
    Cluster c;
    c.use_foreign_certificate("hv2");
    start_both(c);
    ASSERT_TRUE(poll_until(30s, [&] {
        auto s = c.module_status("hv1");
        return s.is_object() && s["peer"].value("channel_reason", "").find("certificate") != std::string::npos;
    })) << c.module_status("hv1").dump();
    // Neither runs the VM: the peer is unknown to both.
    EXPECT_EQ(c.state("hv1"), "WAIT");
    EXPECT_EQ(c.state("hv2"), "WAIT");
    EXPECT_EQ(c.module_status("hv1")["peer"]["channel"], "down");
}

TEST(VmhadPair, RefusesToPairModulesWhoseConfigsDiffer) {
    ClusterOptions o;
    o.module_suffix["hv2"] = "failback:\n  mode: manual\n";
    Cluster c(o);
    start_both(c);
    for (const char* n : {"hv1", "hv2"}) {
        ASSERT_TRUE(poll_until(30s, [&] {
            auto s = c.module_status(n);
            return s.is_object() && s["peer"].value("refused", "").find("failback.mode") != std::string::npos;
        })) << n << ": " << c.module_status(n).dump();
        EXPECT_EQ(c.state(n), "WAIT");
    }
}

}  // namespace
}  // namespace vmhad_test
