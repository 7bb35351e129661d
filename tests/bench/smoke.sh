#!/usr/bin/env bash
# Keeps the benchmark scripts working (not a timed test: no figure is compared with anything).
# Runs imagesync-bench.sh with 1 s fio runs on a 64 MiB file, two rounds, every configuration,
# and checks its JSON: a positive figure and a steal share (0-100 %) for every configuration and
# job in every round, and a per-round ratio to nbdkit for each imagesyncd configuration.
#
#   tests/bench/smoke.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp /tmp/imagesync-bench-smoke.XXXXXX.json)
trap 'rm -f "$out"' EXIT
IMAGESYNCD=$build/imagesync/imagesyncd IMAGESYNC=$build/imagesync/imagesync \
  bash "$here/imagesync-bench.sh" --size 64M --runtime 1 --rounds 2 --json "$out"
python3 - "$out" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
configs = ["imagesync-replicated", "imagesync-alone", "nbdkit", "qemu-nbd"]
jobs = ["randwrite-4k-qd32", "seqwrite-1m-qd8", "write-flush-4k-qd1"]
bad = []
for c in configs:
    for k in jobs:
        runs = j["runs"].get(f"{c}/{k}", [])
        if len(runs) != 2 or not all(r > 0 for r in runs):
            bad.append(f"{c}/{k}: runs {runs}")
        steal = j["steal_percent"].get(f"{c}/{k}", [])
        if len(steal) != 2 or not all(0 <= s <= 100 for s in steal):
            bad.append(f"{c}/{k}: steal {steal}")
        if c.startswith("imagesync"):
            ratios = j["ratios"].get(f"{c}/{k}", [])
            if len(ratios) != 2 or not all(r > 0 for r in ratios):
                bad.append(f"{c}/{k}: ratios {ratios}")
if bad:
    sys.exit("bench smoke: " + "; ".join(bad))
print("bench smoke: every configuration and job measured in both rounds")
PY
