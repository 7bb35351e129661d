#!/usr/bin/env bash
# imagesync data-path benchmark (not a timed test): the same fio jobs through
#   (a) imagesyncd primary replicating to a secondary imagesyncd on loopback  [when supported]
#   (b) imagesyncd with no peer
#   (c) nbdkit's file plugin
#   (d) qemu-nbd (defaults: cache=writeback, aio=threads)
# on the same kind of file, in one run, over ROUNDS paired rounds (below); prints the medians
# and the ratios of (a) and (b) to nbdkit: the median of the per-round ratios, with their range.
#
#   tests/bench/imagesync-bench.sh [--size 1G] [--runtime 10] [--rounds 3] [--json FILE]
#                                  [--jobs JOB,...] [--configs CONFIG,...]
#
# --jobs and --configs run a subset (while working on one path); the ratios need nbdkit, so it
# is always among the configurations. STEAL_LIMIT (percent, default 5): see "Steal" below.
#
# Every server runs on a private socket in a temporary directory and is stopped by PID.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
size=1G runtime=10 rounds=3 json="" only_jobs="" only_configs=""
while (( $# )); do
  case $1 in
    --size) size=$2; shift 2 ;;
    --runtime) runtime=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --json) json=$2; shift 2 ;;
    --jobs) only_jobs=$2; shift 2 ;;
    --configs) only_configs=$2; shift 2 ;;
    *) echo "usage: $0 [--size 1G] [--runtime 10] [--rounds 3] [--json FILE] [--jobs JOB,...] [--configs CONFIG,...]" >&2; exit 64 ;;
  esac
done
imagesyncd=${IMAGESYNCD:-$top/build/imagesync/imagesyncd}
imagesync_tool=${IMAGESYNC:-$(dirname "$imagesyncd")/imagesync}
[[ -x $imagesyncd ]] || { echo "build first: $imagesyncd is missing" >&2; exit 1; }
for tool in fio nbdkit qemu-nbd; do command -v $tool >/dev/null || { echo "$tool is missing (tests/tools/install-deps.sh)" >&2; exit 1; }; done

work=$(mktemp -d /tmp/imagesync-bench.XXXXXX)
pids=()
stop_servers() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap 'stop_servers; rm -rf "$work"' EXIT

wait_for_socket() {  # poll with a 20 s deadline
  local sock=$1 deadline=$((SECONDS + 20))
  until [[ -S $sock ]]; do
    (( SECONDS < deadline )) || { echo "server did not create $sock" >&2; return 1; }
    sleep 0.05  # poll interval (deadline above)
  done
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

replication=0
"$imagesyncd" --help 2>&1 | grep -q -- '--peer' && replication=1
if (( replication )) && [[ ! -x $imagesync_tool ]]; then
  echo "build first: $imagesync_tool is missing (the replicated run waits for the link with it)" >&2
  exit 1
fi

# The replicated figures are for a connected pair: measuring while the primary still dials its
# peer would measure writes recorded dirty (and the resync that follows), not replication.
# The first connected pair also reports its link's TCP congestion control (--tcp-congestion)
# next to the kernel's default, once: it changes the replicated figures (docs/imagesync.md).
link_reported=0
wait_for_link() {  # CONTROL_SOCKET; poll with a 20 s deadline
  local ctl=$1 deadline=$((SECONDS + 20)) state="" cc=""
  until [[ $state == connected ]]; do
    (( SECONDS < deadline )) || { echo "the pair did not connect (link: ${state:-unknown})" >&2; return 1; }
    sleep 0.05  # poll interval (deadline above)
    read -r state cc < <("$imagesync_tool" --control-socket "$ctl" status --json 2>/dev/null \
            | python3 -c 'import json,sys; j=json.load(sys.stdin); print(j.get("connection",""), j.get("tcp_congestion") or "-")' 2>/dev/null || true) || state=""
  done
  if (( ! link_reported )); then
    link_reported=1
    echo "replication link: TCP congestion control $cc (kernel default $(cat /proc/sys/net/ipv4/tcp_congestion_control 2>/dev/null || echo unknown))" >&2
  fi
}

start_server() {  # CONFIG -> sets $uri (not in a subshell: $pids must see the servers)
  local cfg=$1 sock=$work/$1.sock img=$work/$1.img
  rm -f "$sock"
  fallocate -l "$size" "$img"
  case $cfg in
    imagesync-replicated)
      local sec_img=$work/$1-secondary.img port
      port=$(free_port)
      fallocate -l "$size" "$sec_img"
      "$imagesyncd" --image disk="$sec_img" --nbd-socket "$work/sec.sock" --meta-dir "$work/meta-s" \
        --role secondary --listen "127.0.0.1:$port" --log-level warn >"$work/sec.log" 2>&1 &
      pids+=($!)
      wait_for_socket "$work/sec.sock"
      "$imagesyncd" --image disk="$img" --nbd-socket "$sock" --meta-dir "$work/meta-p" \
        --role primary --peer "127.0.0.1:$port" --control-socket "$work/pri.ctl" \
        --log-level warn >"$work/pri.log" 2>&1 &
      pids+=($!)
      wait_for_socket "$sock"
      wait_for_link "$work/pri.ctl"
      uri="nbd+unix:///disk?socket=$sock" ;;
    imagesync-alone)
      "$imagesyncd" --image disk="$img" --nbd-socket "$sock" --meta-dir "$work/meta-a" \
        --role primary --log-level warn >"$work/alone.log" 2>&1 &
      pids+=($!)
      uri="nbd+unix:///disk?socket=$sock" ;;
    nbdkit)
      nbdkit -f -U "$sock" file file="$img" >/dev/null 2>&1 &
      pids+=($!)
      uri="nbd+unix:///?socket=$sock" ;;
    qemu-nbd)
      qemu-nbd -f raw -k "$sock" -t "$img" >/dev/null 2>&1 &
      pids+=($!)
      uri="nbd+unix:///?socket=$sock" ;;
  esac
  wait_for_socket "$sock"
}

# job name -> fio arguments; the figure is write IOPS (4k jobs) or write MiB/s (1M job).
declare -A jobs=(
  [randwrite-4k-qd32]="--rw=randwrite --bs=4k --iodepth=32"
  [seqwrite-1m-qd8]="--rw=write --bs=1M --iodepth=8"
  [write-flush-4k-qd1]="--rw=randwrite --bs=4k --iodepth=1 --fsync=1"
)
job_order=(randwrite-4k-qd32 seqwrite-1m-qd8 write-flush-4k-qd1)
configs=(imagesync-alone nbdkit qemu-nbd)
(( replication )) && configs=(imagesync-replicated "${configs[@]}")
if [[ -n $only_jobs ]]; then
  IFS=, read -r -a job_order <<<"$only_jobs"
  for job in "${job_order[@]}"; do [[ -n ${jobs[$job]:-} ]] || { echo "unknown job $job" >&2; exit 64; }; done
fi
if [[ -n $only_configs ]]; then
  IFS=, read -r -a configs <<<"$only_configs"
  [[ ",$only_configs," == *,nbdkit,* ]] || configs+=(nbdkit)
fi

# The "cpu" line of /proc/stat: steal time and the sum of all fields (clock ticks).
cpu_ticks() { awk '/^cpu /{ t = 0; for (i = 2; i <= NF; i++) t += $i; print $9, t }' /proc/stat; }

run_fio() {  # URI JOB -> "figure steal%"
  local uri=$1 job=$2 out before after
  before=$(cpu_ticks)
  # shellcheck disable=SC2086
  out=$(fio --name=bench --ioengine=nbd --uri="$uri" ${jobs[$job]} --size="$size" \
        --runtime="$runtime" --time_based --numjobs=1 --output-format=json 2>/dev/null \
        | sed -n '/^{/,$p')
  after=$(cpu_ticks)
  python3 -c '
import json,sys
j=json.loads(sys.stdin.read())["jobs"][0]["write"]
s0, t0 = map(int, sys.argv[2].split()); s1, t1 = map(int, sys.argv[3].split())
steal = 100 * (s1 - s0) / (t1 - t0) if t1 > t0 else 0.0
print(j["bw_bytes"]/1048576 if sys.argv[1]=="mb" else j["iops"], round(steal, 1))' \
    "$([[ $job == seqwrite-1m-qd8 ]] && echo mb || echo iops)" "$before" "$after" <<<"$out"
}

# Paired rounds: within a round, each job runs through every configuration back to back (the
# starting configuration rotates from round to round), so a ratio compares runs taken seconds
# apart. This machine's speed drifts by up to 2x over minutes (other tenants); a ratio of two
# medians taken minutes apart carries that drift, a per-round ratio mostly does not.
#
# Steal: the share of this machine's CPU time that the hypervisor gave to other guests during
# each run (/proc/stat). It comes and goes within seconds, so one run of a pair can lose a third
# of its CPU and the other none. Every run's steal is printed; the ratios are given over all
# rounds, and again over the rounds in which neither run of the pair lost more than
# $steal_limit % (with how many rounds that is).
steal_limit=${STEAL_LIMIT:-5}
declare -A results steals
for ((round = 1; round <= rounds; round++)); do
  for job in "${job_order[@]}"; do
    n=${#configs[@]}
    for ((i = 0; i < n; i++)); do
      cfg=${configs[$(( (i + round - 1) % n ))]}
      start_server "$cfg"
      read -r figure steal < <(run_fio "$uri" "$job")
      results[$cfg/$job]+="$figure "
      steals[$cfg/$job]+="$steal "
      stop_servers
      # Every run starts a fresh pair on fresh files: metadata kept from the last run would
      # describe other images (a pair whose last run wrote without a flush starts with all of
      # that recorded dirty, and resyncs it first).
      rm -rf "$work"/*.img "$work"/meta-*
      echo "round $round/$rounds: $cfg $job = $figure (steal $steal %)" >&2
    done
  done
done

python3 - "$json" "${configs[*]}" "${job_order[*]}" "$steal_limit" <<PY
import json, statistics, sys
out_json, configs, jobs = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
steal_limit = float(sys.argv[4])
raw = {$(for k in "${!results[@]}"; do printf '"%s": [%s], ' "$k" "$(echo ${results[$k]} | tr ' ' ',')"; done)}
steal = {$(for k in "${!steals[@]}"; do printf '"%s": [%s], ' "$k" "$(echo ${steals[$k]} | tr ' ' ',')"; done)}
med = {k: statistics.median(v) for k, v in raw.items()}
units = {"randwrite-4k-qd32": "IOPS", "seqwrite-1m-qd8": "MiB/s", "write-flush-4k-qd1": "writes/s"}
print(f"{'median of the rounds':24}" + "".join(f"{j:>22}" for j in jobs))
for c in configs:
    print(f"{c:24}" + "".join(f"{med[c+'/'+j]:>16.0f} {units[j]:>5}" for j in jobs))
# Per-round ratios (paired runs, see above): their median is the figure the targets are read
# against; min-max shows the spread.
ratios = {}
for c in configs:
    if not c.startswith("imagesync"):
        continue
    for j in jobs:
        ratios[c + "/" + j] = [a / b for a, b in zip(raw[c + "/" + j], raw["nbdkit/" + j])]
def table(title, ratio_lists, cell, note):
    print()
    print(f"{title:24}" + "".join(f"{j:>22}" for j in jobs))
    for c in configs:
        if c.startswith("imagesync"):
            print(f"{c:24}" + "".join(f"{cell(ratio_lists[c + '/' + j]):>22}" for j in jobs))
    print(note)
table("ratio to nbdkit", ratios,
      lambda r: f"{statistics.median(r):.2f}x ({min(r):.2f}-{max(r):.2f})",
      f"(median of {len(raw['nbdkit/' + jobs[0]])} per-round ratios, min-max in brackets)")
# The same ratios over the rounds in which neither run lost more than steal_limit % to steal.
calm = {}
for k, r in ratios.items():
    j = k.split("/")[1]
    calm[k] = [x for x, a, b in zip(r, steal[k], steal["nbdkit/" + j])
               if a <= steal_limit and b <= steal_limit]
table(f"ratio, steal <= {steal_limit:g} %", calm,
      lambda r: f"{statistics.median(r):.2f}x (n={len(r)})" if r else "no round (n=0)",
      f"(median of the per-round ratios whose two runs both lost at most {steal_limit:g} % of "
      "the CPU to steal; every run's steal is printed above)")
if out_json:
    json.dump({"median": med, "runs": raw, "steal_percent": steal, "ratios": ratios,
               "median_ratio": {k: statistics.median(v) for k, v in ratios.items()},
               "steal_limit_percent": steal_limit,
               "calm_ratios": calm,
               "median_calm_ratio": {k: statistics.median(v) for k, v in calm.items() if v}},
              open(out_json, "w"), indent=2)
PY
