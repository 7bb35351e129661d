#!/usr/bin/env python3
"""End-to-end scenarios on the two-node test bed (testbed.py), with real guests.

  scenarios.py BUILD_DIR [unittest arguments, e.g. Story or Multi.test_x]

Story: one protected VM through a failure story, in order (each step starts from where the
previous one left the pair): guest crash -> local restart; node crash -> the VM runs on the
survivor, no acknowledged record lost; the node returns -> resync of what changed only; swap
back; the replication link cut while heartbeats go through the second path -> the primary
goes on alone, the link heals, resync; a swap scheduled a few seconds ahead (`vmha swap --at`,
typed on the node that does not run the VM) is carried out by the one that does, and both record
it done. Every step that ends in sync checks both copies with
imagesync's online verify; the end stops the module and compares both images byte for byte.

Multi: four modules at once, active/active (two preferred on each node), a node crash moves
the two it ran, its return brings the pair back; then the same checks per module.

Limits: 32 modules on small disks, started and brought to PRIM/SECOND on both nodes.

Witness: one VM whose module names a vmha-witness running in a third namespace. Cut only the
links between the nodes -> exactly one node runs the VM, nothing lost; the witness down while
the nodes see each other -> nothing changes; the primary isolated from everything -> it stops
writing within its lease, the other node takes over after the lease's end, nothing lost; a
real node crash -> failover within the lease time plus detection. Prints the times measured.
"""

import json
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testbed  # noqa: E402
from testbed import NODES, poll  # noqa: E402

BUILD = None


def other(n):
    return "hv2" if n == "hv1" else "hv1"


class Base(unittest.TestCase):
    bed = None
    modules = []

    @classmethod
    def bring_up(cls, modules, **kw):
        cls.bed = testbed.Bed(BUILD, **kw)
        cls.modules = modules
        try:
            cls.bed.up(modules)
            for m in modules:
                for n in NODES:
                    cls.bed.vmha(n, "start", m.name)
        except Exception:
            cls.bed.failed = True
            cls.bed.teardown()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.bed:
            cls.bed.teardown()

    def run(self, result=None):
        before = len(result.failures) + len(result.errors) if result else 0
        out = super().run(result)
        if result and len(result.failures) + len(result.errors) > before and self.bed:
            self.bed.failed = True
        return out

    def assert_verified(self, n, m):
        r = self.bed.verify_online(n, m)
        self.assertEqual(r.returncode, 0, f"online verify of {m.name} on {n}: {r.stdout}")

    def assert_nothing_lost(self, n, m):
        lost = self.bed.lost_records(n, m)
        self.assertEqual(lost, [], f"{m.name}: acknowledged records missing on {n}'s image")

    def stop_and_compare(self, m):
        """Stops the module on both nodes, then compares the images byte for byte.

        `vmha stop` on the running node alone is a failover (the peer takes the VM over, as
        SafeKit's stop does); a maintenance stop of the pair is `vmha failover off` first, then
        the running side (its last writes reach the peer as it demotes), then the other."""
        first = self.bed.runs_on(m) or "hv1"
        self.bed.vmha(first, "failover", "off", m.name)
        for n in (first, other(first)):
            self.bed.vmha(n, "stop", m.name, timeout=180)
        for n in NODES:
            self.bed.wait_state(n, m, "STOP", 120)
        a, b = (self.bed.image(n, m) for n in NODES)
        r = subprocess.run(["cmp", a, b], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.assertEqual(r.returncode, 0, f"{m.name}: the replicas differ: {r.stdout}")
        self.assert_nothing_lost("hv1", m)


class Story(Base):
    @classmethod
    def setUpClass(cls):
        cls.m = testbed.Module("web1", 0, rate=20)
        cls.bring_up([cls.m])

    def test_0_starts_in_sync(self):
        m = self.m
        self.bed.wait_in_sync(m)
        self.assertEqual(self.bed.runs_on(m), "hv1", "hv1 is preferred")
        self.bed.wait_more_acks(m)
        self.assert_verified("hv1", m)

    def test_1_guest_crash_restarts_locally(self):
        m, bed = self.m, self.bed
        before = bed.boots("hv1", m)
        bed.virsh("hv1", "destroy", m.name)
        poll("the guest to boot again on hv1", lambda: bed.boots("hv1", m) > before, 120, 0.1)
        bed.wait_more_acks(m)
        self.assertEqual(bed.state("hv1", m), "PRIM")
        self.assertEqual(bed.state("hv2", m), "SECOND")
        self.assertEqual(bed.boots("hv2", m), 0, "the VM never ran on hv2")
        self.assert_nothing_lost("hv1", m)
        self.assert_verified("hv1", m)

    def test_2_node_crash_fails_over(self):
        m, bed = self.m, self.bed
        bed.wait_more_acks(m)
        bed.crash("hv1")
        bed.wait_state("hv2", m, "ALONE", 60)
        poll("the guest to boot on hv2", lambda: bed.boots("hv2", m) > 0, 120, 0.1)
        bed.wait_more_acks(m)
        self.assert_nothing_lost("hv2", m)

    def test_3_node_returns_and_resyncs(self):
        m, bed = self.m, self.bed
        before = bed.imagesync_status("hv2", m).get("bytes_resynced")
        self.assertIsNotNone(before, "imagesync status has bytes_resynced")
        bed.boot("hv1")
        bed.wait_in_sync(m, 240)
        self.assertEqual(bed.runs_on(m), "hv2", "no automatic failback is configured")
        resynced = bed.imagesync_status("hv2", m).get("bytes_resynced", 0) - before
        # The guest rewrites only its record ring (slots x 4 KiB) at the start of the disk.
        self.assertGreater(resynced, 0)
        self.assertLessEqual(resynced, m.slots * 4096 + (4 << 20), "only what changed is copied back")
        bed.wait_more_acks(m)
        self.assert_nothing_lost("hv1", m)
        self.assert_verified("hv2", m)

    def test_4_swap_back(self):
        m, bed = self.m, self.bed
        self.assertEqual(bed.runs_on(m), "hv2")
        # Issued on hv1: vmhad forwards it to hv2, where the VM runs.
        bed.vmha("hv1", "swap", m.name, timeout=300)
        bed.wait_state("hv1", m, "PRIM", 120)
        before = bed.boots("hv1", m)
        self.assertGreater(before, 0)
        bed.wait_more_acks(m)
        bed.wait_in_sync(m)
        self.assert_nothing_lost("hv1", m)
        self.assert_nothing_lost("hv2", m)
        self.assert_verified("hv1", m)

    def test_5_replication_link_cut(self):
        m, bed = self.m, self.bed
        bed.cut("lan")
        try:
            # Heartbeats still pass on "hb": hv2 knows hv1 alive and must not start the VM.
            bed.wait_state("hv1", m, "ALONE", 60)
            bed.wait_more_acks(m, 20)
            self.assertEqual(bed.state("hv2", m), "SECOND")
            self.assertEqual(bed.domstate("hv2", m) in ("running", "paused"), False)
        finally:
            bed.heal("lan")
        bed.wait_in_sync(m, 240)
        bed.wait_more_acks(m)
        self.assert_nothing_lost("hv2", m)
        self.assert_verified("hv1", m)

    def test_6_scheduled_swap(self):
        m, bed = self.m, self.bed
        bed.wait_in_sync(m)
        self.assertEqual(bed.runs_on(m), "hv1")
        # Typed on hv2, for a few seconds from now: the VM is to move to hv2; hv1, which runs
        # it then, hands it over.
        swap = json.loads(bed.vmha("hv2", "swap", m.name, "--at", "+8s", "--json").stdout)
        self.assertEqual(swap["to"], "hv2")
        self.assertTrue(swap["peer_informed"])
        before = bed.boots("hv2", m)
        bed.wait_state("hv2", m, "PRIM", 180)
        poll("the guest to boot on hv2", lambda: bed.boots("hv2", m) > before, 120, 0.1)
        bed.wait_more_acks(m)
        bed.wait_in_sync(m)

        def outcome(n):
            plan = json.loads(bed.vmha(n, "schedule", m.name, "--json").stdout)["modules"][0]
            return next(((s["outcome"], s.get("settled_by")) for s in plan["swaps"] if s["id"] == swap["id"]), None)
        poll("both nodes to record the swap done by hv1",
             lambda: all(outcome(n) == ("done", "hv1") for n in NODES), 30, 0.2)
        self.assert_nothing_lost("hv2", m)
        self.assert_verified("hv2", m)

    def test_9_stop_and_compare(self):
        self.stop_and_compare(self.m)


class Witness(Base):
    LEASE = 8.0   # witness.lease (s)
    MARGIN = 1.0  # witness.margin (s)

    @classmethod
    def setUpClass(cls):
        cls.m = testbed.Module("web1", 0, rate=20, witness=True, lease=f"{cls.LEASE:g}s",
                               margin=f"{cls.MARGIN:g}s")
        cls.bring_up([cls.m], witness=True)

    def wait_lease(self, m, n):
        """Until n holds the module's lease (it reached the witness, e.g. after a restart)."""
        poll(f"{n} to hold the lease of {m.name}",
             lambda: (self.bed.status(n, m) or {}).get("lease", {}).get("held"), 60, 0.2)

    def back_in_sync(self, m, verify_on, *nodes):
        """After a heal: in sync, the guest writing, nothing lost on `nodes`, verified."""
        self.bed.wait_in_sync(m, 240)
        self.bed.wait_more_acks(m)
        for n in nodes:
            self.assert_nothing_lost(n, m)
        self.assert_verified(verify_on, m)

    def writer_since(self, m, marks):
        """The node whose guest acknowledged a write after the console offsets in `marks`."""
        return [n for n in NODES if self.bed.acked_since(n, m, marks[n])]

    def test_0_starts_in_sync(self):
        m, bed = self.m, self.bed
        bed.wait_in_sync(m)
        self.assertEqual(bed.runs_on(m), "hv1")
        bed.wait_more_acks(m)
        self.assert_verified("hv1", m)

    def test_1_witness_down_changes_nothing(self):
        m, bed = self.m, self.bed
        bed.stop_witness()
        try:
            # Three leases long: the pair agrees, so the lease is not needed to keep running.
            deadline = time.monotonic() + 3 * self.LEASE
            while time.monotonic() < deadline:
                self.assertEqual(bed.state("hv1", m), "PRIM")
                self.assertEqual(bed.state("hv2", m), "SECOND")
                bed.wait_more_acks(m, 2)
        finally:
            bed.start_witness()
        self.wait_lease(m, "hv1")
        bed.wait_more_acks(m)
        self.assert_nothing_lost("hv1", m)

    def test_2_nodes_cut_from_each_other(self):
        m, bed = self.m, self.bed
        runs = bed.runs_on(m)
        idle = other(runs)
        self.wait_lease(m, runs)
        for link in bed.links():
            bed.cut(link)
        try:
            # Both still reach the witness: the lease holder goes on alone, the other waits.
            bed.wait_state(runs, m, "ALONE", 60)
            marks = {n: bed.console_size(n, m) for n in NODES}
            wait_until = time.monotonic() + 2 * self.LEASE
            while time.monotonic() < wait_until:
                self.assertNotIn(bed.state(idle, m), ("ALONE", "PRIM"), f"{idle} must not run the VM")
                self.assertNotIn(bed.domstate(idle, m), ("running",), f"the VM must not run on {idle}")
                bed.wait_more_acks(m, 2)
            self.assertEqual(self.writer_since(m, marks), [runs])
        finally:
            for link in bed.links():
                bed.heal(link)
        self.back_in_sync(m, runs, idle)

    def before_takeover(self, m):
        """(node running the VM, the other, the other's boots so far, now) once the guest writes."""
        runs = self.bed.runs_on(m)
        self.bed.wait_more_acks(m)
        return runs, other(runs), self.bed.boots(other(runs), m), time.time()

    def taken_over(self, m, idle, before):
        self.bed.wait_state(idle, m, "ALONE", 120)
        poll("the guest to boot on " + idle, lambda: self.bed.boots(idle, m) > before, 120, 0.1)
        self.bed.wait_more_acks(m)

    def test_3_primary_isolated_stops_within_its_lease(self):
        m, bed = self.m, self.bed
        runs, idle, before, t0 = self.before_takeover(m)
        bed.isolate(runs)
        try:
            # The isolated node fences: imagesync refuses its writes before the lease could have
            # passed to the other node, then the VM is powered off.
            bed.wait_state(runs, m, ("WAIT", "STOP", "SECOND"), 60)
            self.taken_over(m, idle, before)
            taken = time.time() - t0
            self.assertNotEqual(bed.domstate(runs, m), "running")
            # The order of events in the two vmhad logs (one clock), not a time budget.
            refused = bed.log_time(runs, r"self-fence: .*imagesync refuses writes now", t0)
            powered_off = bed.log_time(runs, r"-> WAIT \(rule 65\)", t0)
            leased = bed.log_time(idle, rf"lease: held by {idle} ", t0)
            self.assertIsNotNone(refused, f"{runs} logged its self-fence")
            self.assertIsNotNone(powered_off, f"{runs} stopped the VM by rule 65")
            self.assertIsNotNone(leased, f"{idle} logged taking the lease")
            print(f"\n  isolated primary {runs}: writes refused after {refused - t0:.1f} s, VM off after "
                  f"{powered_off - t0:.1f} s (lease {self.LEASE:g} s); {idle} held the lease after "
                  f"{leased - t0:.1f} s, writing after {taken:.1f} s", flush=True)
            self.assertLess(refused, leased, f"{runs} refused writes before {idle} could hold the lease")
        finally:
            bed.rejoin(runs)
        self.back_in_sync(m, idle, idle, runs)

    def test_4_node_crash_fails_over_through_the_witness(self):
        m, bed = self.m, self.bed
        runs, idle, before, t0 = self.before_takeover(m)
        bed.crash(runs)
        self.taken_over(m, idle, before)
        print(f"\n  node crash of {runs}: {idle} writing after {time.time() - t0:.1f} s "
              f"(lease {self.LEASE:g} s)", flush=True)
        self.assert_nothing_lost(idle, m)
        bed.boot(runs)
        bed.wait_in_sync(m, 240)
        bed.wait_more_acks(m)
        self.assert_nothing_lost(runs, m)

    def test_9_stop_and_compare(self):
        self.stop_and_compare(self.m)


class Multi(Base):
    @classmethod
    def setUpClass(cls):
        cls.mods = [testbed.Module(f"vm{i}", i, rate=5, preferred="hv1" if i % 2 == 0 else "hv2")
                    for i in range(4)]
        cls.bring_up(cls.mods)

    def test_0_active_active(self):
        for m in self.mods:
            self.bed.wait_in_sync(m, 300)
            self.assertEqual(self.bed.runs_on(m), m.preferred)
        for m in self.mods:
            self.bed.wait_more_acks(m, 5)

    def test_1_node_crash_moves_its_vms(self):
        bed = self.bed
        bed.crash("hv1")
        for m in self.mods:
            bed.wait_state("hv2", m, "ALONE", 120)
        for m in self.mods:
            bed.wait_more_acks(m, 5, 180)
            self.assert_nothing_lost("hv2", m)

    def test_2_node_returns(self):
        bed = self.bed
        bed.boot("hv1")
        for m in self.mods:
            bed.wait_in_sync(m, 300)
            self.assertEqual(bed.runs_on(m), "hv2")

    def test_9_stop_and_compare(self):
        for m in self.mods:
            self.stop_and_compare(m)


class Limits(Base):
    """32 modules (the per-node limit) on small disks, active/active; a 33rd is refused."""

    @classmethod
    def setUpClass(cls):
        cls.mods = [testbed.Module(f"m{i:02d}", i, disk_mib=4, rate=1, slots=256,
                                   preferred="hv1" if i % 2 == 0 else "hv2") for i in range(32)]
        cls.bring_up(cls.mods)

    def test_0_all_in_sync(self):
        for m in self.mods:
            self.bed.wait_in_sync(m, 900)
            self.assertEqual(self.bed.runs_on(m), m.preferred)
        for m in self.mods:
            self.bed.wait_more_acks(m, 2, 300)
            self.assert_nothing_lost(m.preferred, m)

    def test_1_a_33rd_module_is_refused(self):
        bed = self.bed
        extra = testbed.Module("m32", 32, disk_mib=4)
        path = bed.local("hv1", "modules", "m32.yaml")
        with open(path, "w") as f:
            f.write(bed.module_yaml(extra))
        try:
            r = bed.vmha("hv1", "config", "check", bed.local("hv1", "vmha.yaml"),
                         *sorted(os.path.join(bed.local("hv1", "modules"), x)
                                 for x in os.listdir(bed.local("hv1", "modules"))), check=False)
        finally:
            os.unlink(path)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("at most 32 modules", r.stdout)


def main():
    global BUILD
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 64
    BUILD = sys.argv[1]
    if os.geteuid() != 0:
        print("e2e scenarios need root (namespaces, libvirtd): skipped")
        return 0
    for d in testbed.cleanup_stale():
        print(f"cleaned up a bed left by a dead test process: {d}")
    prog = unittest.main(argv=[sys.argv[0]] + sys.argv[2:], exit=False, verbosity=2)
    r = prog.result
    failed = len(r.failures) + len(r.errors)
    print(f"{r.testsRun - failed - len(r.skipped)} passed, {failed} failed")
    return 0 if r.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
