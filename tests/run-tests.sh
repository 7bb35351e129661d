#!/usr/bin/env bash
# The README's test command: installs what is missing, builds everything with warnings as
# errors, and runs every test through ctest — once in a normal build, once under
# AddressSanitizer + UndefinedBehaviorSanitizer. Exit status: 0 when both runs pass.
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

run_suite "release" build -DCMAKE_BUILD_TYPE=RelWithDebInfo || status=1
if [[ ${VMHA_TEST_SANITIZE:-1} != 0 ]]; then
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    run_suite "asan+ubsan" build-asan -DCMAKE_BUILD_TYPE=Debug -DVMHA_SANITIZE=address,undefined \
    || status=1
fi
if [[ ${VMHA_TEST_FUZZ:-1} != 0 && -f tests/fuzz/CMakeLists.txt ]]; then
  CC=clang CXX=clang++ run_suite "fuzz (short CI mode)" build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DVMHA_FUZZ=ON -DVMHA_TESTS=ON || status=1
fi
exit $status
