#!/usr/bin/env bash
# Starts and stops a libvirtd (+ virtlogd) owned by one test, independent of the system's.
#
# Usage: tests/tools/private-libvirtd.sh start DIR
#        tests/tools/private-libvirtd.sh stop DIR
#        tests/tools/private-libvirtd.sh prepare DIR
#
# prepare: only creates DIR's folders and configuration (as start does), for a caller that
# mounts them and starts the daemons in namespaces of its own (the e2e test bed).
# start: creates DIR/{etc,run,lib,log,cache}, copies the system /etc/libvirt into DIR/etc/libvirt
# (without domains, autostart links or networks, with a qemu.conf fit for tests: user/group
# root, security_driver "none", no dynamic ownership, no cgroups) and starts virtlogd and
# libvirtd in their own mount namespace (unshare -m --propagation private) in which
# /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt are
# bind mounts of DIR's folders. Everything outside those folders is shared with the host, so
# QEMU opens host paths (disk images, NBD sockets) as root. It waits (30 s deadline) until the
# daemon answers, then prints the URI to use on stdout:
#   qemu:///system?socket=DIR/run/libvirt/libvirt-sock
# Pid files: DIR/libvirtd.pid, DIR/virtlogd.pid; daemon logs: DIR/libvirtd.log, DIR/virtlogd.log;
# QEMU logs: DIR/log/libvirt/qemu/DOMAIN.log.
#
# stop: kills exactly the processes this script started (and the QEMU processes whose pid
# files that libvirtd wrote in DIR/run/libvirt/qemu), SIGTERM then SIGKILL after 10 s, and
# waits for them to be gone. Safe to call twice or after a failed start. DIR itself is left
# for the caller (logs are useful after a failure).
# Exit status: 0 ok, 1 failure (message on stderr).
set -euo pipefail

die() { echo "private-libvirtd: $*" >&2; exit 1; }

cmd=${1:-}
dir=${2:-}
[[ ($cmd == start || $cmd == stop || $cmd == prepare) && -n $dir ]] ||
  die "usage: private-libvirtd.sh start|stop|prepare DIR"
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
sock=$dir/run/libvirt/libvirt-sock
uri="qemu:///system?socket=$sock"
(( ${#sock} <= 107 )) || die "socket path \"$sock\" is longer than 107 bytes"

# Kills the pid in file $1 if it is alive, SIGTERM then SIGKILL; waits until it is gone.
kill_pidfile() {
  local file=$1 pid i
  [[ -s $file ]] || return 0
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  kill -TERM "$pid" 2>/dev/null || { rm -f "$file"; return 0; }
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$file"; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$file"; return 0; }
    sleep 0.1
  done
  echo "private-libvirtd: pid $pid (from $file) did not exit" >&2
  return 1
}

if [[ $cmd == stop ]]; then
  rc=0
  kill_pidfile "$dir/libvirtd.pid" || rc=1
  # QEMU processes outlive libvirtd by design; these are the ones our libvirtd started.
  for f in "$dir"/run/libvirt/qemu/*.pid; do
    [[ -e $f ]] && { kill_pidfile "$f" || rc=1; }
  done
  kill_pidfile "$dir/virtlogd.pid" || rc=1
  exit $rc
fi

for p in libvirtd virtlogd unshare; do
  command -v "$p" >/dev/null || [[ -x /usr/sbin/$p ]] || die "$p is missing (tests/tools/install-deps.sh)"
done
[[ $cmd == start && -s $dir/libvirtd.pid ]] && kill -0 "$(<"$dir/libvirtd.pid")" 2>/dev/null &&
  die "a libvirtd started from $dir runs already (pid $(<"$dir/libvirtd.pid"))"

mkdir -p "$dir"/{etc,run/libvirt,lib/libvirt,log/libvirt,cache/libvirt}
rm -rf "$dir/etc/libvirt"
cp -a /etc/libvirt "$dir/etc/libvirt"
# Only what the test defines: no domains, networks or autostart from the system copy.
rm -rf "$dir/etc/libvirt/qemu" "$dir/etc/libvirt/storage" "$dir/etc/libvirt/secrets"
mkdir -p "$dir/etc/libvirt/qemu"
cat >>"$dir/etc/libvirt/qemu.conf" <<'EOF'

# private-libvirtd.sh (tests): run QEMU as root without confinement so it can open host paths
# (images, imagesyncd's NBD sockets); no cgroups (containers); logs through virtlogd.
user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
cgroup_controllers = [ ]
remember_owner = 0
EOF
cat >>"$dir/etc/libvirt/libvirtd.conf" <<EOF

# private-libvirtd.sh (tests)
unix_sock_group = "root"
unix_sock_rw_perms = "0770"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:file:$dir/libvirtd.log"
EOF
cat >>"$dir/etc/libvirt/virtlogd.conf" <<EOF

# private-libvirtd.sh (tests)
log_outputs = "3:file:$dir/virtlogd.log"
EOF

[[ $cmd == prepare ]] && exit 0

libvirtd_bin=$(command -v libvirtd || echo /usr/sbin/libvirtd)
virtlogd_bin=$(command -v virtlogd || echo /usr/sbin/virtlogd)

# The namespace lives as long as a process in it does; both daemons daemonize inside it.
unshare -m --propagation private -- /bin/sh -ec '
  dir=$1
  mount --bind "$dir/etc/libvirt" /etc/libvirt
  mkdir -p /run/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt
  mount --bind "$dir/run/libvirt" /run/libvirt
  mount --bind "$dir/lib/libvirt" /var/lib/libvirt
  mount --bind "$dir/log/libvirt" /var/log/libvirt
  mount --bind "$dir/cache/libvirt" /var/cache/libvirt
  "$2" --daemon --pid-file "$dir/virtlogd.pid"
  exec "$3" --daemon --pid-file "$dir/libvirtd.pid"
' private-libvirtd "$dir" "$virtlogd_bin" "$libvirtd_bin" </dev/null >"$dir/start.log" 2>&1 ||
  { cat "$dir/start.log" >&2; die "libvirtd did not start (see $dir/libvirtd.log)"; }

for ((i = 0; i < 300; i++)); do
  if [[ -S $sock ]] && virsh -q -c "$uri" version >/dev/null 2>&1; then
    echo "$uri"
    exit 0
  fi
  sleep 0.1
done
"$0" stop "$dir" || true
die "libvirtd at $sock did not answer within 30 s (see $dir/libvirtd.log)"
