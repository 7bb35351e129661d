#!/usr/bin/env bash
# Resync benchmark (not a timed test): how long the first full sync and a failback resync take
# with two imagesyncd on loopback, against peers measured in the same run:
#   - full sync of SIZE of random data (half of it, the other half holes) to an empty peer,
#     vs nbdcopy of the same file into a qemu-nbd export and rsync --whole-file to a new file;
#   - failback resync after CHANGED scattered bytes were written while the peer was away,
#     vs rsync (which must read both whole images to find the changes).
#   tests/bench/resync-bench.sh [--size 1G] [--changed 64M]
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
size=1G changed=64M
while (( $# )); do
  case $1 in
    --size) size=$2; shift 2 ;;
    --changed) changed=$2; shift 2 ;;
    *) echo "usage: $0 [--size 1G] [--changed 64M]" >&2; exit 64 ;;
  esac
done
b=$top/build/imagesync
[[ -x $b/imagesyncd && -x $b/imagesync ]] || { echo "build first" >&2; exit 1; }
work=$(mktemp -d /tmp/resync-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
bytes() { numfmt --from=iec "$1"; }
now() { date +%s.%N; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# Source image: random data in the first half, holes in the second.
half=$(( $(bytes "$size") / 2 ))
truncate -s "$size" "$work/a.img"
head -c "$half" /dev/urandom | dd of="$work/a.img" conv=notrunc status=none
truncate -s "$size" "$work/b.img"
sync

wait_state() {  # CTL WORD: poll the status until the connection is WORD (120 s deadline)
  local deadline=$((SECONDS + 120))
  until "$b/imagesync" --control-socket "$1" status --json 2>/dev/null | grep -q "\"connection\": \"$2\""; do
    (( SECONDS < deadline )) || { echo "timeout waiting for $2" >&2; exit 1; }
    sleep 0.02  # poll interval (deadline above)
  done
}
start() {  # NAME ROLE EXTRA...
  local n=$1 role=$2; shift 2
  "$b/imagesyncd" --image disk="$work/$n.img" --nbd-socket "$work/$n.sock" --meta-dir "$work/m$n" \
    --node "$n" --role "$role" --listen "127.0.0.1:$port" --peer "127.0.0.1:$port" \
    --control-socket "$work/$n.ctl" --log-level warn "$@" >>"$work/$n.log" 2>&1 &
  pids+=($!)
}

start b secondary
until [[ -S $work/b.ctl ]]; do sleep 0.02; done
t0=$(now)
start a primary
wait_state "$work/a.ctl" connected
t_full=$(echo "$(now) - $t0" | bc)
cmp "$work/a.img" "$work/b.img" || { echo "replicas differ" >&2; exit 1; }

# Peers for the first sync.
qemu-img create -q -f raw "$work/q.img" "$size"
t0=$(now)
nbdcopy --flush -- "$work/a.img" [ qemu-nbd -f raw "$work/q.img" ]
t_nbdcopy=$(echo "$(now) - $t0" | bc)
t0=$(now)
rsync --whole-file --sparse "$work/a.img" "$work/r.img"
t_rsync_full=$(echo "$(now) - $t0" | bc)

# Failback: the secondary away, CHANGED bytes written in 64 KiB pieces all over, back again.
kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true
pieces=$(( $(bytes "$changed") / 65536 ))
stride=$(( $(bytes "$size") / pieces ))
cmds=()
for ((i = 0; i < pieces; i++)); do cmds+=(-c "write -P $((i % 250 + 1)) $((i * stride)) 64k"); done
qemu-io -f raw "nbd+unix:///disk?socket=$work/a.sock" "${cmds[@]}" >/dev/null
cp --sparse=always "$work/b.img" "$work/r.img"  # rsync's target: the old copy
t0=$(now)
start b secondary
wait_state "$work/a.ctl" connected
t_failback=$(echo "$(now) - $t0" | bc)
cmp "$work/a.img" "$work/b.img" || { echo "replicas differ after failback" >&2; exit 1; }
t0=$(now)
rsync --inplace --no-whole-file --ignore-times "$work/a.img" "$work/r.img"
t_rsync_delta=$(echo "$(now) - $t0" | bc)

printf '%-44s %8s s\n' "full sync of $size (half data): imagesync" "$t_full"
printf '%-44s %8s s\n' "  nbdcopy into qemu-nbd" "$t_nbdcopy"
printf '%-44s %8s s\n' "  rsync --whole-file to a new file" "$t_rsync_full"
printf '%-44s %8s s\n' "failback after $changed scattered: imagesync" "$t_failback"
printf '%-44s %8s s\n' "  rsync --no-whole-file (delta)" "$t_rsync_delta"
echo
printf 'full sync: imagesync / nbdcopy = %.2fx the time; failback: imagesync / rsync = %.2fx the time\n' \
  "$(echo "$t_full / $t_nbdcopy" | bc -l)" "$(echo "$t_failback / $t_rsync_delta" | bc -l)"
