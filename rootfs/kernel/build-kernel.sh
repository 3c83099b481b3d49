#!/usr/bin/env bash
# Builds Ember's guest kernel (an uncompressed ELF vmlinux, which ember-vmm boots directly)
# from Debian's kernel source package and this directory's config fragment, out of tree, into
# a cache directory; prints the vmlinux's path as the only line on stdout (make's output goes
# to stderr).
#
#   rootfs/kernel/build-kernel.sh [--source 6.1|6.12] [--cache DIR] [--jobs N] [--config-only]
#
# --source    which linux-source-<version> package (default $EMBER_KERNEL_SOURCE, else 6.1,
#             Debian 12's own kernel; 6.12 is in bookworm-security too)
# --cache     default $EMBER_KERNEL_BUILD_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/ember/kernel
# --jobs      make -j (default: the number of CPUs)
# --config-only  stop once the merged .config is checked and print its path instead: checks
#             the fragment against a source version in a minute or two, without the build
#
# The result lands in <cache>/<key>/vmlinux, where <key> is a SHA-256 over the fragment, the
# source package's exact Debian version and this recipe's version: a second run with the same
# inputs prints the cached path at once; a changed fragment or a source update builds anew.
# An interrupted build resumes in <cache>/<key>/build. Installing the source package and the
# build tools (apt-get) is this script's job: run it as root, or with sudo available.
# A build takes about 13 minutes on 2 cores (much longer at -j1), so no CI job runs it.
set -euo pipefail

# Bump when the steps below change what they produce.
readonly RECIPE=1
readonly HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly FRAGMENT=$HERE/ember.config
readonly BUILD_DEPS=(bc bison flex gcc libelf-dev libssl-dev make xz-utils)

die() { echo "build-kernel: $*" >&2; exit 2; }
say() { echo "build-kernel: $*" >&2; }

source_version=${EMBER_KERNEL_SOURCE:-6.1}
cache=${EMBER_KERNEL_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ember/kernel}
jobs=$(nproc)
config_only=0
while [ $# -gt 0 ]; do
  case $1 in
    --source) source_version=${2:?--source needs a version}; shift 2 ;;
    --cache) cache=${2:?--cache needs a directory}; shift 2 ;;
    --jobs) jobs=${2:?--jobs needs a number}; shift 2 ;;
    --config-only) config_only=1; shift ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
case $source_version in 6.1|6.12) ;; *) die "--source must be 6.1 or 6.12, not '$source_version'" ;; esac
[[ $jobs =~ ^[1-9][0-9]*$ ]] || die "--jobs must be a positive number, not '$jobs'"
[ -r "$FRAGMENT" ] || die "no config fragment at $FRAGMENT"

readonly PACKAGE=linux-source-$source_version
readonly TARBALL=/usr/src/$PACKAGE.tar.xz

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

install_packages() {
  local missing=() pkg sudo=""
  for pkg in "$@"; do installed "$pkg" || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo > /dev/null || die "need root (or sudo) to install: ${missing[*]}"
    sudo=sudo
  fi
  say "installing ${missing[*]}"
  if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends \
         "${missing[@]}" >&2; then
    $sudo apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends \
      "${missing[@]}" >&2 || die "apt-get could not install ${missing[*]}"
  fi
}

install_packages "${BUILD_DEPS[@]}" "$PACKAGE"
[ -r "$TARBALL" ] || die "$PACKAGE is installed but $TARBALL is missing"
deb_version=$(dpkg-query -W -f='${Version}' "$PACKAGE")

key=$( { echo "recipe $RECIPE"; echo "$PACKAGE $deb_version"; cat "$FRAGMENT"; } |
       sha256sum | cut -c1-16)
readonly OUT=$cache/$key
mkdir -p "$cache"
# One build per key at a time; a second caller waits and then finds the result.
exec 9> "$cache/$key.lock"
flock 9
if [ -s "$OUT/vmlinux" ]; then
  say "cached: $PACKAGE $deb_version with $(basename "$FRAGMENT")"
  echo "$OUT/vmlinux"
  exit 0
fi

# The unpacked source is shared by every key built from the same package version.
readonly SRC=$cache/source/$PACKAGE-$deb_version
if [ ! -f "$SRC/.unpacked" ]; then
  say "unpacking $TARBALL into $SRC"
  rm -rf "$SRC"
  mkdir -p "$SRC"
  tar -xJf "$TARBALL" -C "$SRC" --strip-components=1
  touch "$SRC/.unpacked"
fi

readonly BUILD=$OUT/build
mkdir -p "$BUILD"
kmake() { make -C "$SRC" O="$BUILD" ARCH=x86_64 "$@" >&2; }

started=$(date +%s)
say "configuring in $BUILD: tinyconfig + kvm_guest.config + $(basename "$FRAGMENT")"
kmake tinyconfig
kvm_guest=$(find "$SRC/kernel/configs" "$SRC/arch/x86/configs" -name kvm_guest.config | head -1)
[ -n "$kvm_guest" ] || die "no kvm_guest.config in $SRC"
(cd "$BUILD" && "$SRC/scripts/kconfig/merge_config.sh" -m -O "$BUILD" "$BUILD/.config" \
   "$kvm_guest" "$FRAGMENT" >&2)
kmake olddefconfig

# merge_config only warns when an option does not survive (a dependency left out, a symbol
# renamed between kernel versions); a kernel without one of the fragment's options is wrong.
lost=()
while IFS= read -r line; do
  if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
    grep -qxF "$line" "$BUILD/.config" || lost+=("${BASH_REMATCH[1]}=${BASH_REMATCH[2]}")
  elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
    ! grep -q "^${BASH_REMATCH[1]}=" "$BUILD/.config" || lost+=("${BASH_REMATCH[1]} unset")
  fi
done < "$FRAGMENT"
[ ${#lost[@]} -eq 0 ] || die "the merged config lost: ${lost[*]} (see $BUILD/.config)"
if [ $config_only -eq 1 ]; then
  say "every option of $(basename "$FRAGMENT") is in the merged config"
  echo "$BUILD/.config"
  exit 0
fi

say "building vmlinux with -j$jobs (about 13 minutes on 2 cores)"
kmake -j"$jobs" vmlinux
cp "$BUILD/vmlinux" "$OUT/vmlinux.tmp"
cp "$BUILD/.config" "$OUT/config"
echo "$PACKAGE $deb_version" > "$OUT/source"
mv "$OUT/vmlinux.tmp" "$OUT/vmlinux"
rm -rf "$BUILD"
say "built in $(( $(date +%s) - started )) s: $PACKAGE $deb_version"
echo "$OUT/vmlinux"
