#!/usr/bin/env bash
# Installs every Debian package Ember needs to build, test and benchmark. Idempotent: when
# everything is already installed it changes nothing and needs no network.
set -euo pipefail

PACKAGES=(
  # build
  cmake g++ make pkg-config
  protobuf-compiler libprotobuf-dev libabsl-dev
  libgrpc++-dev protobuf-compiler-grpc
  liburing-dev libseccomp-dev
  # bzImage payload decompressors, and libcrypto for the kernel cache's SHA-256 keys
  zlib1g-dev liblzma-dev libzstd-dev liblz4-dev libbz2-dev libssl-dev
  libgtest-dev libgmock-dev
  # tests: network namespaces and tap devices
  iproute2
  # benchmarks: QEMU's microvm machine is the baseline perf/run compares against
  qemu-system-x86
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "setup: installing ${missing[*]}"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
