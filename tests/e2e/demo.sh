#!/usr/bin/env bash
# The README's first command: the vmha demo.
#
# Installs what is missing, builds vmha if needed, then runs tests/e2e/demo.py: two hypervisors
# on this machine (network + mount namespaces, each with its own libvirtd and vmhad), a small
# Linux guest protected by a mirror module, and a failure story — node crash, failover with its
# measured time, the node's return with a resync of only what changed, the swap back — checked
# at the end (online verify, no acknowledged write lost). Everything is cleaned up afterwards.
# Needs root (namespaces, libvirtd). Exit status 0 when the story ran to its end.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"

bash tests/tools/install-deps.sh
if [[ ! -f build/build.ninja ]]; then
  printf '\n\033[1m== Building vmha (the first run takes several minutes)\033[0m\n'
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
ninja -C build vmhad vmha imagesyncd imagesync >/dev/null  # nothing to do when up to date
exec python3 tests/e2e/demo.py build
