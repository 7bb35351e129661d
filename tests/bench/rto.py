#!/usr/bin/env python3
"""RTO and RPO of vmha on the two-node test bed (tests/e2e/testbed.py), with a real guest.

  tests/bench/rto.py BUILD_DIR [--crashes 20] [--guest-crashes 5] [--seed N] [--json FILE]
                     [--witness [--lease 8s] [--isolations 5]]

Node crash: once the pair is in sync and the guest writes, wait a random 0-3 s, then crash the
node that runs the VM (SIGKILL of everything in its namespaces, links down). Measured from the
kill, on the wall clock:
  detection  the survivor's vmhad logs the peer lost (every heartbeat path silent)
  promotion  the survivor's vmhad starts the domain (imagesync promoted, VM defined)
  boot       the guest's first acknowledged write on the survivor (its console)
RPO: acknowledged records (either node's console) missing from the survivor's image. Then the
crashed node boots again, resyncs (time and bytes are recorded), and the next crash hits
whichever node runs the VM then.
Guest crash: `virsh destroy` of the running guest; time until its next acknowledged write on
the same node.
Resync: the secondary crashes, N MiB are written next to the guest's ring through the
primary's NBD socket while it is down, it returns: time until in sync, bytes copied.
With --witness, the module names a vmha-witness running in a third namespace (testbed.py), so
that every start without the peer needs the lease; --isolations N then also cuts the node that
runs the VM from everything (both node links and its witness link) at a random moment, and
measures how long it takes to fence itself (from the cut until its vmhad tells imagesync to
refuse writes, and until the VM is stopped: rule 65) and until the
guest writes on the other node (which waits for the lease to expire first); the links are then
healed and the pair resyncs.
Heartbeat settings are vmha's defaults (the module files set none). Prints a table; this
machine's TCG guests boot in software, so "boot" is far slower than on KVM.
"""

import argparse
import json
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import testbed  # noqa: E402
from testbed import poll  # noqa: E402


def node_crash(bed, m, rng):
    victim = bed.runs_on(m)
    survivor = "hv2" if victim == "hv1" else "hv1"
    bed.wait_more_acks(m, 5)
    time.sleep(rng.uniform(0, 3))  # the random crash moment
    offset = bed.console_size(survivor, m)
    t0 = time.time()
    bed.crash(victim)
    poll("the guest writing on the survivor",
         lambda: bed.acked_since(survivor, m, offset), 180, 0.02)
    t_ack = time.time()
    detected = bed.log_time(survivor, r'peer \S+ lost', t0)
    started = bed.log_time(survivor, r'starting domain', t0)
    lost = bed.lost_records(survivor, m)
    row = {"victim": victim, "detection": detected - t0 if detected else None,
           "promotion": started - detected if started and detected else None,
           "boot": t_ack - started if started else None, "total": t_ack - t0, "lost": len(lost)}
    # The victim returns; the resync of what changed meanwhile is timed.
    before = bed.imagesync_status(survivor, m).get("bytes_resynced", 0)
    t1 = time.time()
    bed.boot(victim)
    bed.wait_in_sync(m, 300)
    row["resync_s"] = time.time() - t1
    row["resynced_bytes"] = bed.imagesync_status(survivor, m).get("bytes_resynced", 0) - before
    return row


def resync_after(bed, m, mib):
    """The node that does not run the VM crashes; while it is down, `mib` MiB are written next to
    the guest's ring through the primary's NBD socket (qemu-io); it returns: time to in sync and
    bytes copied."""
    primary = bed.runs_on(m)
    victim = "hv2" if primary == "hv1" else "hv1"
    bed.crash(victim)
    bed.wait_state(primary, m, "ALONE", 60)
    sock = bed.local(primary, "run", m.name, "nbd.sock")
    offset = m.slots * 4096 + (1 << 20)
    testbed.run(["qemu-io", "-f", "raw", "-c", f"write -P 0x5a {offset} {mib}M",
                 f"nbd+unix:///{m.name}?socket={sock}"], timeout=300)
    before = bed.imagesync_status(primary, m).get("bytes_resynced", 0)
    t1 = time.time()
    bed.boot(victim)
    bed.wait_in_sync(m, 600)
    return {"written_mib": mib, "resync_s": time.time() - t1,
            "resynced_mib": (bed.imagesync_status(primary, m).get("bytes_resynced", 0) - before) / 1048576}


def isolation(bed, m, rng):
    """The node that runs the VM loses both node links and its witness link."""
    victim = bed.runs_on(m)
    survivor = "hv2" if victim == "hv1" else "hv1"
    bed.wait_more_acks(m, 5)
    time.sleep(rng.uniform(0, 3))
    offset = bed.console_size(survivor, m)
    t0 = time.time()
    bed.isolate(victim)
    try:
        poll("the guest writing on the other node", lambda: bed.acked_since(survivor, m, offset), 240, 0.02)
        t_ack = time.time()
        fencing = bed.log_time(victim, r"self-fence: .* imagesync refuses writes now", t0)
        fenced = bed.log_time(victim, r"-> WAIT \(rule 65\)", t0)
        row = {"victim": victim, "fence_start": fencing - t0 if fencing else None,
               "self_fence": fenced - t0 if fenced else None, "total": t_ack - t0,
               "lost": len(bed.lost_records(survivor, m))}
    finally:
        bed.rejoin(victim)
    bed.wait_in_sync(m, 300)
    return row


def guest_crash(bed, m):
    n = bed.runs_on(m)
    bed.wait_more_acks(m, 5)
    offset = bed.console_size(n, m)
    t0 = time.time()
    bed.virsh(n, "destroy", m.name)
    poll("the guest writing again", lambda: bed.acked_since(n, m, offset), 180, 0.02)
    return {"node": n, "total": time.time() - t0}


def describe(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{statistics.median(values):6.2f} (min {min(values):.2f}, max {max(values):.2f})"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("build")
    p.add_argument("--crashes", type=int, default=20)
    p.add_argument("--guest-crashes", type=int, default=5)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--resync-mib", default="1,16,48", help="MiB written while the secondary is down")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    p.add_argument("--witness", action="store_true", help="a vmha-witness in a third namespace, leases")
    p.add_argument("--lease", default="8s", help="witness.lease with --witness")
    p.add_argument("--isolations", type=int, default=5, help="with --witness: isolations of the running node")
    a = p.parse_args()
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    m = testbed.Module("web1", 0, rate=50, disk_mib=64, restart_attempts=1000, witness=a.witness,
                       lease=a.lease)
    nodes, guests, resyncs, isolations = [], [], [], []
    with testbed.Bed(a.build, witness=a.witness) as bed:
        bed.up([m])
        for n in testbed.NODES:
            bed.vmha(n, "start", m.name)
        bed.wait_in_sync(m, 300)
        for i in range(a.guest_crashes):
            guests.append(guest_crash(bed, m))
            print(f"guest crash {i + 1}: {guests[-1]['total']:.2f} s", flush=True)
        for mib in [int(x) for x in a.resync_mib.split(",") if x]:
            resyncs.append(resync_after(bed, m, mib))
            r = resyncs[-1]
            print(f"resync after {mib} MiB written: {r['resync_s']:.2f} s, {r['resynced_mib']:.1f} MiB copied",
                  flush=True)
        for i in range(a.isolations if a.witness else 0):
            isolations.append(isolation(bed, m, rng))
            r = isolations[-1]
            print(f"isolation {i + 1} ({r['victim']}): writes refused from {r['fence_start']}, VM stopped at "
                  f"{r['self_fence']}, other node writing after {r['total']:.2f} s, lost {r['lost']}", flush=True)
        for i in range(a.crashes):
            row = node_crash(bed, m, rng)
            nodes.append(row)
            print(f"node crash {i + 1} ({row['victim']}): " +
                  ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
                            if k != "victim"), flush=True)
    print(f"\nvmha RTO/RPO on the two-node test bed (seed {seed}, default heartbeat settings, TCG guests"
          f"{', witness lease ' + a.lease if a.witness else ''})")
    print(f"{'measure':<34} median (min, max) seconds")
    print(f"{'node crash: detection':<34} {describe([r['detection'] for r in nodes])}")
    print(f"{'node crash: promotion':<34} {describe([r['promotion'] for r in nodes])}")
    print(f"{'node crash: guest boot to 1st write':<34} {describe([r['boot'] for r in nodes])}")
    print(f"{'node crash: kill to guest writing':<34} {describe([r['total'] for r in nodes])}")
    print(f"{'guest crash: kill to guest writing':<34} {describe([r['total'] for r in guests])}")
    print(f"{'failback resync (node back to sync)':<34} {describe([r['resync_s'] for r in nodes])}")
    resynced = [r["resynced_bytes"] for r in nodes if r.get("resynced_bytes") is not None]
    if resynced:
        print(f"{'resynced bytes per return':<34} median {statistics.median(resynced) / 1048576:.2f} MiB")
    for r in resyncs:
        print(f"{'resync after ' + str(r['written_mib']) + ' MiB written':<34} {r['resync_s']:6.2f} s "
              f"({r['resynced_mib']:.1f} MiB copied, the guest's ring included)")
    if isolations:
        print(f"{'isolated primary: writes refused':<34} {describe([r['fence_start'] for r in isolations])}")
        print(f"{'isolated primary: VM stopped':<34} {describe([r['self_fence'] for r in isolations])}")
        print(f"{'isolated primary: other node writing':<34} {describe([r['total'] for r in isolations])}")
    lost = sum(r["lost"] for r in nodes) + sum(r["lost"] for r in isolations)
    print(f"RPO: {lost} acknowledged records lost over {len(nodes)} node crashes"
          f"{f' and {len(isolations)} isolations' if isolations else ''}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"seed": seed, "node_crashes": nodes, "guest_crashes": guests, "resyncs": resyncs,
                       "isolations": isolations}, f,
                      indent=1)
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
