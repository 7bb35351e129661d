#!/usr/bin/env bash
# The README's test command: installs what is missing, builds everything with warnings as
# errors, and runs every test through ctest: under AddressSanitizer + UndefinedBehaviorSanitizer,
# the fuzz targets in a short mode, then the normal build (whose summary closes the output).
# Exit status: 0 when every suite passed.
#
#   tests/run-tests.sh            # both builds
#   VMHA_TEST_SANITIZE=0 tests/run-tests.sh   # skip the sanitizer build (faster, local use)
#   VMHA_TEST_FUZZ=0 tests/run-tests.sh       # skip the short fuzzing run
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

bash tests/tools/install-deps.sh
jobs=$(nproc)
status=0

run_suite() {  # NAME BUILD_DIR CMAKE_ARGS...
  local name=$1 dir=$2
  shift 2
  echo "==> $name: configure and build in $dir"
  cmake -S . -B "$dir" -G Ninja -DVMHA_WERROR=ON "$@" >/dev/null
  ninja -C "$dir" -j "$jobs" >/dev/null || { ninja -C "$dir" -j 1 | tail -n 40; return 1; }
  echo "==> $name: ctest"
  ctest --test-dir "$dir" --output-on-failure -j "$jobs" --timeout 600
}

if [[ ${VMHA_TEST_SANITIZE:-1} != 0 ]]; then
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    run_suite "asan+ubsan" build-asan -DCMAKE_BUILD_TYPE=Debug -DVMHA_SANITIZE=address,undefined \
    || status=1
fi
if [[ ${VMHA_TEST_FUZZ:-1} != 0 ]]; then
  # Short CI mode: each libFuzzer target runs for VMHA_FUZZ_SECONDS (20 s) from its seeds.
  echo "==> fuzz: configure and build the fuzz targets in build-fuzz (clang)"
  if cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DVMHA_FUZZ=ON \
       -DVMHA_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null &&
     ninja -C build-fuzz -j "$jobs" nbd-fuzz peer-protocol-fuzz >/dev/null; then
    echo "==> fuzz: ctest -L fuzz"
    ctest --test-dir build-fuzz -L fuzz --output-on-failure || status=1
  else
    echo "fuzz targets failed to build" >&2
    status=1
  fi
fi
# The full suite in the normal build runs last, so that its ctest summary closes the output.
run_suite "release" build -DCMAKE_BUILD_TYPE=RelWithDebInfo || status=1
(( status == 0 )) || echo "run-tests: an earlier suite failed (see above)" >&2
exit $status
