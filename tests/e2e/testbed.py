"""The two-node test bed: two hypervisors on one machine, as vmha runs in production.

Each node is a network namespace plus a mount namespace, held open by one "holder" process
(`sleep`) that everything else of the node joins with nsenter. In the node's mount namespace:
  - /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt are
    the node's own folders (tests/tools/private-libvirtd.sh prepare makes them), so the node's
    libvirtd and virtlogd are independent of the host's and of the other node's, and vmhad
    uses the plain URI qemu:///system;
  - BED/node is the node's local disk (BED/hvN/local on the host): images, vmhad's state and
    run folders, the guest's serial console. The module files name the same paths on both
    nodes, like the files /etc/vmha/modules/*.yaml on two real hypervisors.
Links are veth pairs between the two network namespaces: "lan" (10.201.1.0/24: vmhad's control
channel, replication, the first heartbeat path) and optionally "hb" (10.201.2.0/24: a second
heartbeat path, which carries the control channel too when the lan is cut).

With witness=True, a third network namespace runs vmha-witness (a third machine). Each node
has its own link to it (hv1: 10.201.3.0/24, hv2: 10.201.4.0/24), and the witness answers on one
address, 10.201.9.9:7950, routed through each node's link, so that the module files stay
identical on both nodes. cut_witness(n)/heal_witness(n) break and mend one node's link to it;
stop_witness()/start_witness() end and restart its process (its grants are in its state file).

A node crash is SIGKILL of every process in the node's network namespace (vmhad, imagesyncd,
libvirtd, virtlogd, QEMU, the holder) and its links down; a reboot wipes what lives in tmpfs
on a real machine (/run/libvirt, vmhad's run folder) and starts the node again. Everything is
ended by PID (the processes in the bed's own namespaces) and removed by teardown(), also after
a failed run (the directory is kept then, with every log).

Stdlib only; driven by scenarios.py (ctest), tests/bench/rto.py and the demo.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from datetime import datetime

import records

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
TOOLS = os.path.join(TOP, "tests", "tools")

LINKS = {"lan": "10.201.1", "hb": "10.201.2"}
WITNESS_LINKS = {"hv1": "10.201.3", "hv2": "10.201.4"}  # node .1, witness .3
WITNESS_ADDRESS = "10.201.9.9"
WITNESS_PORT = 7950
NODES = ("hv1", "hv2")
CONTROL_PORT = 7800
HEALTH_PORT = 9010


class BedError(Exception):
    pass


_live_beds = []


def _on_signal(signum, frame):
    # ctest's timeout or an interrupt: the bed goes down with the test, kept for reading.
    for bed in list(_live_beds):
        bed.failed = True
        bed.teardown()
    raise SystemExit(128 + signum)


def cleanup_stale():
    """Tears down beds left by test processes that died without their teardown (SIGKILL):
    each bed folder names its owner's pid and its namespaces. Returns what was cleaned."""
    cleaned = []
    for entry in os.listdir("/tmp"):
        d = os.path.join("/tmp", entry)
        if not entry.startswith("vmha-e2e-") or not os.path.isfile(os.path.join(d, "owner")):
            continue
        try:
            with open(os.path.join(d, "owner")) as f:
                owner = int(f.read().split()[0])
            os.kill(owner, 0)
            continue  # its owner still runs
        except (ValueError, IndexError, ProcessLookupError):
            pass
        except PermissionError:
            continue
        try:
            with open(os.path.join(d, "netns")) as f:
                names = f.read().split()
        except FileNotFoundError:
            names = []
        for ns in names:
            r = run(["ip", "netns", "pids", ns], check=False)
            for pid in (r.stdout.split() if r.returncode == 0 else []):
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            run(["ip", "netns", "del", ns], check=False)
        os.unlink(os.path.join(d, "owner"))  # kept for its logs; no longer a live bed
        cleaned.append(d)
    return cleaned


def poll(what, check, timeout, interval=0.05):
    """Calls check() until it returns a true value (returned) or timeout seconds pass (raises)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise BedError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)  # poll interval (deadline above)


def run(argv, timeout=60, check=True, **kw):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise BedError(f"{' '.join(argv)} exited {r.returncode}: {r.stdout.strip()}")
    return r


class Module:
    """One protected VM: a module file (the same on both nodes), its domain and its disk."""

    def __init__(self, name, index, disk_mib=16, rate=20, slots=1024, preferred="hv1", failback="manual",
                 stable_for="5s", restart_attempts=2, extra="", witness=False, lease="8s", margin="1s"):
        self.name = name
        self.slots = slots  # the guest's record ring: slots * 4 KiB at the start of the disk
        self.index = index
        self.disk_mib = disk_mib
        self.rate = rate
        self.preferred = preferred
        self.failback = failback
        self.stable_for = stable_for
        self.restart_attempts = restart_attempts
        self.extra = extra
        self.witness = witness  # a witness section naming the bed's vmha-witness
        self.lease = lease
        self.margin = margin

    @property
    def replication_port(self):
        return 7900 + 2 * self.index

    @property
    def heartbeat_port(self):
        return 7901 + 2 * self.index


class Bed:
    def __init__(self, build_dir, second_path=True, keep=False, heartbeat=None, witness=False):
        if os.geteuid() != 0:
            raise BedError("the test bed needs root (namespaces, libvirtd)")
        self.build = os.path.abspath(build_dir)
        self.vmhad = os.path.join(self.build, "vmha", "daemon", "vmhad")
        self.imagesyncd = os.path.join(self.build, "imagesync", "imagesyncd")
        self.vmha_cli = os.path.join(self.build, "vmha", "cli", "vmha")
        self.witness_bin = os.path.join(self.build, "vmha", "witness", "vmha-witness")
        self.witness = witness
        for binary in (self.vmhad, self.imagesyncd, self.vmha_cli) + ((self.witness_bin,) if witness else ()):
            if not os.access(binary, os.X_OK):
                raise BedError(f"{binary} is not built")
        self.second_path = second_path
        self.keep = keep
        # heartbeat settings for the module files; None = vmha's defaults
        self.heartbeat = heartbeat
        self.dir = tempfile.mkdtemp(prefix="vmha-e2e-", dir="/tmp")
        tag = f"{os.getpid() % 100000}{os.path.basename(self.dir)[-4:]}"
        self.tag = "".join(c for c in tag if c.isalnum())[-8:]
        self.netns = {n: f"vmha-{self.tag}-{n}" for n in NODES}
        self.wit_ns = f"vmha-{self.tag}-wit"
        self.witness_proc = None
        self.holder = {}
        self.vmhad_proc = {}
        self.modules = []
        self.failed = False
        self._netns_made = []
        with open(os.path.join(self.dir, "owner"), "w") as f:
            f.write(f"{os.getpid()}\n")
        with open(os.path.join(self.dir, "netns"), "w") as f:
            f.write("\n".join(list(self.netns.values()) + ([self.wit_ns] if witness else [])) + "\n")
        _live_beds.append(self)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _on_signal)

    # ---- paths ---------------------------------------------------------------------------
    @property
    def node_path(self):  # the node-local folder, as every node sees it
        return os.path.join(self.dir, "node")

    def local(self, n, *parts):  # a node's local folder, as the host sees it
        return os.path.join(self.dir, n, "local", *parts)

    def address(self, n, link="lan"):
        return f"{LINKS[link]}.{NODES.index(n) + 1}"

    def veth(self, n, link):
        return f"v{self.tag}{link[0]}{NODES.index(n) + 1}"

    def image(self, n, module):
        return self.local(n, "images", f"{module.name}.raw")

    def console(self, n, module):
        return self.local(n, "console", f"{module.name}.log")

    def vmhad_log(self, n):
        return os.path.join(self.dir, n, "vmhad.log")

    # ---- bring-up ------------------------------------------------------------------------
    def up(self, modules):
        """Builds the guest, the certificates, the network and both nodes; starts vmhad."""
        self.modules = list(modules)
        self._make_guest()
        self._make_certs()
        self._make_network()
        for n in NODES:
            self._write_node_files(n)
        for n in NODES:
            self.boot(n)

    def _make_guest(self):
        guest = os.path.join(self.dir, "guest")
        os.makedirs(guest)
        recwriter = os.path.join(guest, "recwriter")
        run(["gcc", "-static", "-O2", "-o", recwriter, os.path.join(HERE, "guest", "recwriter.c")])
        run(["bash", os.path.join(TOOLS, "tiny-guest.sh"), guest, recwriter], timeout=900)

    def _make_certs(self):
        certs = os.path.join(self.dir, "certs")
        script = os.path.join(TOP, "configs", "vmha-certs.sh")
        run(["sh", script, "ca", certs])
        for n in NODES + (("witness1",) if self.witness else ()):
            run(["sh", script, "node", certs, n])

    def _make_network(self):
        for n in NODES:
            run(["ip", "netns", "add", self.netns[n]])
            self._netns_made.append(self.netns[n])
            run(["ip", "-n", self.netns[n], "link", "set", "lo", "up"])
        for link in (["lan", "hb"] if self.second_path else ["lan"]):
            a, b = (self.veth(n, link) for n in NODES)
            run(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
            for n, dev in zip(NODES, (a, b)):
                run(["ip", "link", "set", dev, "netns", self.netns[n]])
                run(["ip", "-n", self.netns[n], "addr", "add", f"{self.address(n, link)}/24", "dev", dev])
                run(["ip", "-n", self.netns[n], "link", "set", dev, "up"])
        if self.witness:
            self._make_witness_network()
            self.start_witness()

    # ---- the witness (a third machine) ------------------------------------------------------
    def witness_veth(self, n, side):  # side "n": the node's end, "w": the witness's end
        return f"v{self.tag}{side}{NODES.index(n) + 1}"

    def _make_witness_network(self):
        run(["ip", "netns", "add", self.wit_ns])
        self._netns_made.append(self.wit_ns)
        run(["ip", "-n", self.wit_ns, "link", "set", "lo", "up"])
        run(["ip", "-n", self.wit_ns, "addr", "add", f"{WITNESS_ADDRESS}/32", "dev", "lo"])
        for n in NODES:
            a, b = self.witness_veth(n, "n"), self.witness_veth(n, "w")
            run(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
            run(["ip", "link", "set", a, "netns", self.netns[n]])
            run(["ip", "link", "set", b, "netns", self.wit_ns])
            run(["ip", "-n", self.netns[n], "addr", "add", f"{WITNESS_LINKS[n]}.1/24", "dev", a])
            run(["ip", "-n", self.wit_ns, "addr", "add", f"{WITNESS_LINKS[n]}.3/24", "dev", b])
            run(["ip", "-n", self.wit_ns, "link", "set", b, "up"])
            self.heal_witness(n)

    def heal_witness(self, n):
        """Node n's link to the witness up, with its route to the witness's address."""
        run(["ip", "-n", self.netns[n], "link", "set", self.witness_veth(n, "n"), "up"])
        run(["ip", "-n", self.netns[n], "route", "replace", f"{WITNESS_ADDRESS}/32", "via", f"{WITNESS_LINKS[n]}.3"])

    def isolate(self, n):
        """Node n cut from everything: both node links and its link to the witness."""
        for link in self.links():
            self.cut(link)
        if self.witness:
            self.cut_witness(n)

    def rejoin(self, n):
        """Undoes isolate(n)."""
        if self.witness:
            self.heal_witness(n)
        for link in self.links():
            self.heal(link)

    def cut_witness(self, n):
        run(["ip", "-n", self.netns[n], "link", "set", self.witness_veth(n, "n"), "down"])

    def witness_log(self):
        return os.path.join(self.dir, "witness", "witness.log")

    def start_witness(self):
        d = os.path.join(self.dir, "witness")
        os.makedirs(d, exist_ok=True)
        certs = os.path.join(self.dir, "certs")
        with open(os.path.join(d, "witness.yaml"), "w") as f:
            f.write(f"""name: witness1
listen: 0.0.0.0:{WITNESS_PORT}
tls: {{ca: {certs}/ca.pem, cert: {certs}/witness1.pem, key: {certs}/witness1.key}}
state_file: {d}/leases.json
pairs:
  - nodes: [hv1, hv2]
""")
        log = open(self.witness_log(), "a")
        self.witness_proc = subprocess.Popen(
            ["ip", "netns", "exec", self.wit_ns, self.witness_bin, "--config", os.path.join(d, "witness.yaml")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        proc = self.witness_proc

        def listening():
            if proc.poll() is not None:
                with open(self.witness_log(), errors="replace") as f:
                    raise BedError(f"vmha-witness exited with status {proc.returncode}:\n{f.read()[-2000:]}")
            return run(["ip", "netns", "exec", self.wit_ns, "bash", "-c",
                        f"exec 3<>/dev/tcp/127.0.0.1/{WITNESS_PORT}"], check=False).returncode == 0
        poll("vmha-witness to listen", listening, 30)

    def stop_witness(self, sig=signal.SIGKILL):
        proc, self.witness_proc = self.witness_proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=30)

    def links(self):
        return ["lan", "hb"] if self.second_path else ["lan"]

    def module_yaml(self, m):
        guest = os.path.join(self.dir, "guest")
        xml = os.path.join(self.dir, "domains", f"{m.name}.xml")
        os.makedirs(os.path.dirname(xml), exist_ok=True)
        with open(xml, "w") as f:
            f.write(f"""<domain type='qemu'>
  <name>{m.name}</name>
  <memory unit='MiB'>160</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{guest}/vmlinuz</kernel>
    <initrd>{guest}/initrd.img</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet vmha.rate={m.rate} vmha.slots={m.slots}</cmdline>
  </os>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{self.node_path}/images/{m.name}.raw'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'><source path='{self.node_path}/console/{m.name}.log' append='on'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
""")
        hb = ""
        if self.heartbeat:
            hb = "".join(f"  {k}: {v}\n" for k, v in self.heartbeat.items())
        paths = "".join(
            f"    - {{name: {link}, port: {m.heartbeat_port}, addresses: "
            f"{{hv1: {self.address('hv1', link)}, hv2: {self.address('hv2', link)}}}}}\n"
            for link in self.links())
        failback = f"failback:\n  mode: {m.failback}\n  preferred_node: {m.preferred}\n"
        if m.failback == "automatic":
            failback += f"  stable_for: {m.stable_for}\n"
        return f"""module: {m.name}
vm:
  name: {m.name}
  domain_xml: {xml}
  shutdown_timeout: 5s
disks:
  - path: {self.node_path}/images/{m.name}.raw
    export: {m.name}
nodes:
  - {{name: hv1, address: {self.address('hv1')}, hypervisor_uri: "qemu:///system"}}
  - {{name: hv2, address: {self.address('hv2')}, hypervisor_uri: "qemu:///system"}}
replication:
  port: {m.replication_port}
heartbeat:
{hb}  paths:
{paths}checkers:
  - type: vm
    interval: 1s
restart:
  attempts: {m.restart_attempts}
  window: 1h
{failback}health_check:
  port: {HEALTH_PORT + m.index}
{self.witness_yaml(m)}{m.extra}"""

    def witness_yaml(self, m):
        if not m.witness:
            return ""
        return (f"witness:\n  endpoints: [\"{WITNESS_ADDRESS}:{WITNESS_PORT}\"]\n  name: witness1\n"
                f"  lease: {m.lease}\n  margin: {m.margin}\n")

    def _write_node_files(self, n):
        for sub in ("images", "state", "run", "console", "modules"):
            os.makedirs(self.local(n, sub), exist_ok=True)
        os.makedirs(self.node_path, exist_ok=True)
        run(["bash", os.path.join(TOOLS, "private-libvirtd.sh"), "prepare", os.path.join(self.dir, n, "lv")])
        for m in self.modules:
            with open(self.local(n, "modules", f"{m.name}.yaml"), "w") as f:
                f.write(self.module_yaml(m))
            if not os.path.exists(self.image(n, m)):
                with open(self.image(n, m), "wb") as f:
                    f.truncate(m.disk_mib << 20)
        certs = os.path.join(self.dir, "certs")
        with open(self.local(n, "vmha.yaml"), "w") as f:
            f.write(f"""node: {n}
state_dir: {self.node_path}/state
run_dir: {self.node_path}/run
modules_dir: {self.node_path}/modules
admin_socket: {self.node_path}/run/admin.sock
tls: {{ca: {certs}/ca.pem, cert: {certs}/{n}.pem, key: {certs}/{n}.key}}
log:
  level: debug
""")

    def _nsenter(self, n):
        return ["nsenter", "-t", str(self.holder[n].pid), "-m", "-n", "--"]

    def boot(self, n):
        """Starts node n: its namespaces' holder, virtlogd, libvirtd, its links, vmhad."""
        lv = os.path.join(self.dir, n, "lv")
        # What a reboot empties (tmpfs on a real machine).
        for d in (os.path.join(lv, "run", "libvirt"), self.local(n, "run")):
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
        binds = [(os.path.join(lv, "etc", "libvirt"), "/etc/libvirt"),
                 (os.path.join(lv, "run", "libvirt"), "/run/libvirt"),
                 (os.path.join(lv, "lib", "libvirt"), "/var/lib/libvirt"),
                 (os.path.join(lv, "log", "libvirt"), "/var/log/libvirt"),
                 (os.path.join(lv, "cache", "libvirt"), "/var/cache/libvirt"),
                 (self.local(n), self.node_path)]
        script = "set -e\n" + "".join(f"mkdir -p '{dst}'; mount --bind '{src}' '{dst}'\n" for src, dst in binds)
        script += "echo ready\nexec sleep infinity\n"
        holder = subprocess.Popen(["ip", "netns", "exec", self.netns[n], "unshare", "-m", "--propagation",
                                   "private", "sh", "-c", script],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  start_new_session=True)
        line = holder.stdout.readline()
        if line.strip() != "ready":
            holder.kill()
            raise BedError(f"node {n}: namespace setup failed: {line}{holder.stdout.read()}")
        holder.stdout.close()
        self.holder[n] = holder
        for link in self.links():
            run(["ip", "-n", self.netns[n], "link", "set", self.veth(n, link), "up"])
        if self.witness:
            self.heal_witness(n)
        for daemon, pidfile in (("virtlogd", "virtlogd.pid"), ("libvirtd", "libvirtd.pid")):
            binary = shutil.which(daemon) or f"/usr/sbin/{daemon}"
            run(self._nsenter(n) + [binary, "--daemon", "--pid-file", os.path.join(lv, pidfile)])
        poll(f"libvirtd on {n}",
             lambda: run(self._nsenter(n) + ["virsh", "-q", "-c", "qemu:///system", "version"],
                         check=False, timeout=20).returncode == 0, 60)
        self.start_vmhad(n)

    def start_vmhad(self, n):
        log = open(self.vmhad_log(n), "a")
        self.vmhad_proc[n] = subprocess.Popen(
            self._nsenter(n) + [self.vmhad, "--config", f"{self.node_path}/vmha.yaml",
                                "--imagesyncd", self.imagesyncd, "--log-level", "debug"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        proc = self.vmhad_proc[n]

        def answers():
            if proc.poll() is not None:
                with open(self.vmhad_log(n), errors="replace") as f:
                    tail = "".join(f.readlines()[-10:])
                raise BedError(f"vmhad on {n} exited with status {proc.returncode}:\n{tail}")
            return self.vmha(n, "status", "--json", check=False).returncode == 0
        poll(f"vmhad on {n} to answer", answers, 60)

    # ---- faults --------------------------------------------------------------------------
    def pids(self, n):
        r = run(["ip", "netns", "pids", self.netns[n]], check=False)
        return [int(p) for p in r.stdout.split()] if r.returncode == 0 else []

    def crash(self, n):
        """Node n dies: its links go down and every process in its namespaces gets SIGKILL."""
        for link in self.links():
            run(["ip", "-n", self.netns[n], "link", "set", self.veth(n, link), "down"], check=False)
        if self.witness:
            run(["ip", "-n", self.netns[n], "link", "set", self.witness_veth(n, "n"), "down"], check=False)
        self._kill_all(n)

    def _kill_all(self, n):
        def gone():
            pids = self.pids(n)
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return not pids
        poll(f"every process of {n} to die", gone, 30)
        for proc in (self.holder.pop(n, None), self.vmhad_proc.pop(n, None)):
            if proc is not None:
                proc.wait(timeout=30)

    def cut(self, link):
        for n in NODES:
            run(["ip", "-n", self.netns[n], "link", "set", self.veth(n, link), "down"])

    def heal(self, link):
        for n in NODES:
            run(["ip", "-n", self.netns[n], "link", "set", self.veth(n, link), "up"])

    # ---- looking -------------------------------------------------------------------------
    def vmha(self, n, *args, check=True, timeout=120):
        return run([self.vmha_cli, "--socket", self.local(n, "run", "admin.sock"), *args],
                   check=check, timeout=timeout)

    def status(self, n, module):
        r = self.vmha(n, "status", "--json", module.name, check=False, timeout=30)
        if r.returncode != 0:
            return None
        try:
            mods = json.loads(r.stdout).get("modules", [])
        except json.JSONDecodeError:
            return None
        return mods[0] if mods else None

    def state(self, n, module):
        s = self.status(n, module)
        return s.get("state", "") if s else ""

    def wait_state(self, n, module, want, timeout=120):
        want = (want,) if isinstance(want, str) else tuple(want)
        try:
            return poll(f"{module.name} on {n} to be {'/'.join(want)}",
                        lambda: self.state(n, module) in want, timeout, interval=0.2)
        except BedError as e:
            raise BedError(f"{e}; status: {json.dumps(self.status(n, module))}") from None

    def virsh(self, n, *args, check=True):
        return run(self._nsenter(n) + ["virsh", "-c", "qemu:///system", *args], check=check, timeout=60)

    def domstate(self, n, module):
        r = self.virsh(n, "domstate", module.name, check=False)
        return r.stdout.strip() if r.returncode == 0 else "absent"

    def in_sync(self, module):
        s = self.status("hv1", module), self.status("hv2", module)
        if not all(s):
            return False
        states = sorted(x.get("state") for x in s)
        # The primary's replication link connected: a resync that has just ended on the target's
        # side may still show on the source's for a poll (and a swap is refused meanwhile).
        primary = next(x for x in s if x.get("state") == "PRIM") if "PRIM" in states else {}
        return (states == ["PRIM", "SECOND"] and all(x.get("data_state") == "UpToDate" for x in s) and
                (primary.get("replication") or {}).get("connection") == "connected")

    def wait_in_sync(self, module, timeout=180):
        poll(f"{module.name} to be PRIM/SECOND, both UpToDate", lambda: self.in_sync(module), timeout, 0.2)

    def runs_on(self, module):
        for n in NODES:
            if self.state(n, module) in ("PRIM", "ALONE"):
                return n
        return None

    # ---- the guest's records --------------------------------------------------------------
    def console_texts(self, module):
        texts = []
        for n in NODES:
            try:
                with open(self.console(n, module), "rb") as f:
                    texts.append(f.read())
            except FileNotFoundError:
                pass
        return texts

    def acks(self, module):
        """The records the guest saw acknowledged, on either node."""
        return records.acknowledged(self.console_texts(module))

    def boots(self, n, module):
        try:
            with open(self.console(n, module), "rb") as f:
                return len(records.boots(f.read()))
        except FileNotFoundError:
            return 0

    def console_size(self, n, module):
        """Where n's console log of the module ends now (0 if there is none yet)."""
        try:
            return os.path.getsize(self.console(n, module))
        except FileNotFoundError:
            return 0

    def acked_since(self, n, module, offset):
        """Whether the guest acknowledged a write on n's console after byte `offset` of its log."""
        try:
            with open(self.console(n, module), "rb") as f:
                f.seek(offset)
                return b"VMHA-ACK" in f.read()
        except FileNotFoundError:
            return False

    def lost_records(self, n, module):
        """Acknowledged records (seen on either node's console) missing from n's image.

        The image may be live (the guest writing): a slot being rewritten can read torn for an
        instant, so a slot that looks wrong is read again a moment later before it counts."""
        lost = records.missing(self.image(n, module), self.acks(module), module.slots)
        if lost:
            time.sleep(0.5)  # let an in-flight write of that slot finish, then read again
            lost = records.missing(self.image(n, module), set(lost), module.slots)
        return lost

    def wait_more_acks(self, module, how_many=10, timeout=120):
        """Waits until the guest acknowledges how_many records beyond the highest seen now."""
        base = max(self.acks(module), default=0)
        poll(f"{module.name}'s guest to write {how_many} more records",
             lambda: max(self.acks(module), default=0) >= base + how_many, timeout, 0.1)

    def imagesync_status(self, n, module):
        """imagesyncd's own status on node n (`imagesync status --json`), or {}."""
        tool = os.path.join(self.build, "imagesync", "imagesync")
        sock = self.local(n, "run", module.name, "imagesync.sock")
        r = run([tool, "--control-socket", sock, "status", "--json"], check=False, timeout=30)
        try:
            return json.loads(r.stdout) if r.returncode == 0 else {}
        except json.JSONDecodeError:
            return {}

    def verify_online(self, n, module):
        """imagesync's online verify on the primary n: both copies compared chunk by chunk."""
        tool = os.path.join(self.build, "imagesync", "imagesync")
        sock = self.local(n, "run", module.name, "imagesync.sock")
        return run([tool, "--control-socket", sock, "verify"], check=False, timeout=300)

    def log_time(self, n, pattern, after=0.0):
        """The wall-clock time (epoch seconds) of the first line of n's vmhad log matching pattern
        and stamped after `after`; None if there is none."""
        rx = re.compile(pattern)
        try:
            with open(self.vmhad_log(n), errors="replace") as f:
                for line in f:
                    if not rx.search(line):
                        continue
                    stamp = line.split(" ", 1)[0]
                    try:
                        t = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
                    except ValueError:
                        continue
                    if t >= after:
                        return t
        except FileNotFoundError:
            pass
        return None

    # ---- teardown ------------------------------------------------------------------------
    def teardown(self):
        if self in _live_beds:
            _live_beds.remove(self)
        for n in NODES:
            if self.netns[n] in self._netns_made:
                try:
                    self._kill_all(n)
                except BedError:
                    pass
        if self.wit_ns in self._netns_made:
            try:
                self.stop_witness()
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        for ns in self._netns_made:
            run(["ip", "netns", "del", ns], check=False)
        self._netns_made = []
        try:
            os.unlink(os.path.join(self.dir, "owner"))
        except FileNotFoundError:
            pass
        if self.failed or self.keep:
            print(f"test bed kept in {self.dir} (vmhad logs: hvN/vmhad.log, libvirt: hvN/lv, "
                  f"consoles: hvN/local/console)")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is not None:
            self.failed = True
        self.teardown()
        return False


if __name__ == "__main__":
    import sys
    if sys.argv[1:] != ["cleanup"]:
        print("usage: testbed.py cleanup   (tears down beds whose test process died)", file=sys.stderr)
        sys.exit(64)
    for d in cleanup_stale():
        print(f"cleaned up the bed in {d} (kept for its logs)")
