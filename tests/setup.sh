#!/usr/bin/env bash
# Installs every Debian package Ember needs to build, test and benchmark, and fetches
# Debian's cloud kernel package that the Linux boot test boots. Idempotent: when everything
# is already there it changes nothing and needs no network.
set -euo pipefail

PACKAGES=(
  # build (lld: the linker of the dynamically linked binaries, see CMakeLists.txt)
  cmake g++ lld make pkg-config
  protobuf-compiler libprotobuf-dev libabsl-dev
  libgrpc++-dev protobuf-compiler-grpc
  liburing-dev libseccomp-dev
  # ember-fc-api: Firecracker's REST API (HTTP parsing); curl replays Firecracker's guide in tests
  curl libhttp-parser-dev
  # bzImage payload decompressors, and nettle for the kernel cache's SHA-256 keys
  zlib1g-dev liblzma-dev libzstd-dev liblz4-dev libbz2-dev nettle-dev
  libgtest-dev libgmock-dev
  # tests: static test binaries for jails, network namespaces and tap devices
  libc6-dev iproute2
  # tests: ACPICA's iasl and acpiexec read back the DSDT the VMM writes
  acpica-tools
  # emberd's clone networks: their NAT rules through libnftables; `nft` for tests and operators
  libnftables-dev nftables
  # e2e tests: the independent gRPC client of emberd, and throwaway TLS certificates
  python3-grpcio python3-protobuf openssl
  # ember-rootfs: mke2fs -d and debugfs build its images (and its tests read them back);
  # libarchive reads container exports and OCI layers, nlohmann-json their OCI index and configs
  e2fsprogs libarchive-dev nlohmann-json3-dev
  # sanitizer and fuzz stages (.ci/sanitize-and-fuzz): clang, its ASan/UBSan/libFuzzer
  # runtimes (not pulled in without recommends) and llvm-symbolizer for readable reports
  clang libclang-rt-dev llvm
  # benchmarks: QEMU's microvm machine is the baseline perf/run compares against
  qemu-system-x86
  # ember-runtime's tests and benchmark: containerd (ctr) and podman drive it, runc is their
  # baseline, busybox-static makes the test image's layers
  busybox-static containerd podman runc
)
# Outside the source tree, reused across builds and checkouts.
KERNEL_DEB_DIR=/var/cache/ember/debian-kernel
KERNEL_META_PACKAGE=linux-image-cloud-amd64

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
need_kernel=1
if compgen -G "$KERNEL_DEB_DIR/linux-image-*-cloud-amd64_*.deb" > /dev/null; then need_kernel=0; fi

if [ ${#missing[@]} -eq 0 ] && [ $need_kernel -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages and the Debian kernel package are already here"
  exit 0
fi

$SUDO apt-get update -q
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [ $need_kernel -eq 1 ]; then
  # The meta package names the current kernel package; download that one (not installed).
  kernel_pkg=$(apt-cache depends "$KERNEL_META_PACKAGE" |
               awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
  echo "setup: downloading $kernel_pkg into $KERNEL_DEB_DIR"
  $SUDO mkdir -p "$KERNEL_DEB_DIR"
  (cd "$KERNEL_DEB_DIR" && $SUDO apt-get download -q -o APT::Sandbox::User=root "$kernel_pkg")
fi
