#!/usr/bin/env bash
# Installs every Debian package vmha needs to build, test and run its demo.
# Idempotent: prints nothing and touches nothing when all packages are present.
# Usage: tests/tools/install-deps.sh [--quiet]
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config git clang libclang-rt-14-dev
  clang-format clang-tidy
  # libraries
  libvirt-dev liburing-dev libyaml-cpp-dev libspdlog-dev libfmt-dev libboost-dev
  libssl-dev libxxhash-dev nlohmann-json3-dev libcli11-dev
  googletest libgtest-dev libgmock-dev
  libxml2-dev libxml2-utils  # hypervisor: domain XML rewrite; virt-xml-validate needs xmllint
  curl openssl  # vmhad tests: the health check over HTTP; configs/vmha-certs.sh
  etcd-server etcd-client  # witness tests: the etcd lease backend against a real etcd
  # hypervisor and data-path peers used by tests, benchmarks and the demo
  libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils
  fio libnbd-bin nbdkit iproute2 procps psmisc util-linux busybox-static cpio
  rsync bc tzdata python3
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || missing+=("$p")
done
(( ${#missing[@]} == 0 )) && exit 0

if (( EUID != 0 )); then
  echo "install-deps: missing packages (${missing[*]}); run as root to install them" >&2
  exit 1
fi
echo "install-deps: installing ${#missing[@]} package(s): ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends \
  -o Dpkg::Options::=--force-confnew -o Dpkg::Options::=--force-confdef \
  "${missing[@]}" >/dev/null
echo "install-deps: done" >&2
