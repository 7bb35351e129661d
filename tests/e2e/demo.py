#!/usr/bin/env python3
"""The vmha demo: two hypervisors on this machine, one protected VM, a failure story.

  tests/e2e/demo.py BUILD_DIR       (run by tests/e2e/demo.sh, the README's first command)

Brings up nodes hv1 and hv2 (network + mount namespaces, each with its own libvirtd and vmhad,
linked by two virtual networks), protects a small Linux guest whose disk imagesync mirrors
synchronously, then: crashes hv1 and shows the failover to hv2 with its measured times, brings
hv1 back and shows the resync of only what changed, swaps the VM back to hv1, and checks that
no write the guest saw acknowledged was lost. Everything it started is cleaned up at the end.
"""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testbed  # noqa: E402
from testbed import poll  # noqa: E402

BOLD, DIM, OFF = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def say(text):
    print(f"\n{BOLD}== {text}{OFF}", flush=True)


def note(text):
    print(f"   {text}", flush=True)


def show_status(bed, n):
    r = bed.vmha(n, "status", check=False)
    for line in (r.stdout or "(vmhad not answering)").rstrip().splitlines():
        print(f"   {n} | {line}")


def guest_line(bed, m):
    acks = bed.acks(m)
    return f"the guest has written {len(acks)} records, each acknowledged only once on both disks"


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 64
    build = sys.argv[1]
    m = testbed.Module("web1", 0, rate=20)
    with testbed.Bed(build) as bed:
        say("1. Two hypervisors, hv1 and hv2, as two network namespaces on this machine")
        note("each with its own libvirtd and vmhad, linked by a LAN (10.201.1.0/24) and a second")
        note("heartbeat network (10.201.2.0/24); building a tiny Debian guest first ...")
        t = time.time()
        bed.up([m])
        note(f"up in {time.time() - t:.0f} s. The module file, identical on both nodes:")
        with open(bed.local("hv1", "modules", "web1.yaml")) as f:
            for line in f.read().splitlines()[:24]:
                print(f"   {DIM}{line}{OFF}")

        say("2. vmha start web1 on both nodes: hv1 (preferred) runs the VM, hv2 mirrors its disk")
        for n in testbed.NODES:
            bed.vmha(n, "start", m.name)
        bed.wait_in_sync(m, 300)
        bed.wait_more_acks(m, 20)
        show_status(bed, "hv1")
        note(guest_line(bed, m))

        say("3. hv1 crashes: every process of the node is killed, its network goes down")
        offset = bed.console_size("hv2", m)
        t0 = time.time()
        bed.crash("hv1")
        poll("the guest to write on hv2", lambda: bed.acked_since("hv2", m, offset), 180, 0.02)
        t_ack = time.time()
        detected = bed.log_time("hv2", r"peer \S+ lost", t0)
        started = bed.log_time("hv2", r"starting domain", t0)
        if detected and started:
            note(f"hv2 saw hv1 lost on every heartbeat path after {detected - t0:.2f} s,")
            note(f"promoted its copy and started the VM {started - detected:.2f} s later;")
            note(f"the guest booted and wrote again {t_ack - started:.2f} s after that")
        note(f"failover: {t_ack - t0:.2f} s from the crash to the guest writing on hv2 "
             "(its boot is software-emulated here)")
        show_status(bed, "hv2")
        lost = bed.lost_records("hv2", m)
        note(f"acknowledged records missing on hv2's disk: {len(lost)}")

        say("4. hv1 comes back: it finds hv2 ahead and takes only what changed")
        bed.wait_more_acks(m, 40)
        before = bed.imagesync_status("hv2", m).get("bytes_resynced", 0)
        t1 = time.time()
        bed.boot("hv1")
        last = None
        while not bed.in_sync(m):
            s = bed.status("hv2", m) or {}
            resync = (s.get("replication") or {}).get("resync")
            if isinstance(resync, dict) and resync != last:
                done, total = resync.get("bytes_done", 0), resync.get("bytes_total", 0)
                note(f"resync: {done / 1048576:.1f} of {total / 1048576:.1f} MiB copied")
                last = resync
            if time.time() - t1 > 300:
                raise testbed.BedError("hv1 did not get back in sync within 300 s")
            time.sleep(0.2)  # poll interval (deadline above)
        resynced = bed.imagesync_status("hv2", m).get("bytes_resynced", 0) - before
        what = f", {resynced / 1048576:.1f} MiB copied of a {m.disk_mib} MiB disk"
        note(f"hv1 is SECOND and UpToDate again {time.time() - t1:.1f} s after it booted{what}")
        show_status(bed, "hv1")

        say("5. vmha swap web1 (typed on hv1, carried out by hv2): the VM goes back to hv1")
        r = bed.vmha("hv1", "swap", m.name, timeout=300)
        note(r.stdout.strip())
        bed.wait_state("hv1", m, "PRIM", 120)
        bed.wait_more_acks(m, 10)
        bed.wait_in_sync(m, 120)
        show_status(bed, "hv1")

        say("6. The proof: online verify of both copies, and every acknowledged write present")
        r = bed.verify_online("hv1", m)
        for line in r.stdout.strip().splitlines():
            note(line)
        for n in testbed.NODES:
            note(f"{n}: {len(bed.lost_records(n, m))} acknowledged records missing")
        note(guest_line(bed, m))

        say("Done: cleaning up (VMs, daemons, namespaces)")
    print("\nNext: `bash tests/run-tests.sh` runs every test; tests/bench/rto.py measures failover times.")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (testbed.BedError, subprocess.SubprocessError) as e:
        print(f"demo failed: {e}", file=sys.stderr)
        sys.exit(1)
