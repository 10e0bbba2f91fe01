#!/usr/bin/env bash
# Raspberry Pi proof without a Pi: build faceunlock's wheel here, install it with pip from
# PyPI's aarch64 wheels inside an emulated Debian bookworm arm64 root filesystem (what
# Raspberry Pi OS Bookworm is built on: Python 3.11), and run one enrolment and one
# unlock on bundled frames (tools/aarch64_smoke.py) with each shipped embedder. The emulated
# templates must equal the native ones within a per-embedder tolerance (2e-4 dlib, 1e-3 MobileFaceNet).
#
# Needs root, qemu-user-static, binfmt-support and debootstrap (installed with apt-get
# when missing). The prepared root filesystem (Python + venv with numpy, OpenCV, LiteRT,
# cryptography) is cached as a tarball under $FACEUNLOCK_CI_CACHE
# (default ~/.cache/faceunlock-ci); from nothing this takes ~10 min on 2 cores, from the
# cache ~1-2 min. Pass --rebuild to ignore the cache.
#
# The two traps (FACTS §6): aarch64 code must never see the host's x86 /proc/cpuinfo
# (TFLite's CPU detection segfaults in Interpreter()): a small Cortex-A72 cpuinfo is bound
# over ROOTFS/proc/cpuinfo. And every chroot command runs under `env -i` so that no host
# variable (CA bundle paths, PYTHON*, VIRTUAL_ENV…) leaks in.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CACHE=${FACEUNLOCK_CI_CACHE:-$HOME/.cache/faceunlock-ci}
SUITE=bookworm
# Bump CACHE_VERSION when the prepared contents change.
CACHE_VERSION=1
PY_PACKAGES="numpy opencv-python-headless ai-edge-litert cryptography"
TARBALL="$CACHE/debian-$SUITE-arm64-py-v$CACHE_VERSION.tar.zst"
VENV=/opt/fu-venv
REBUILD=0
[ "${1:-}" = "--rebuild" ] && REBUILD=1

log() { printf '[aarch64 %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { log "ERROR: $*"; exit 1; }
T_START=$(date +%s)
elapsed() { echo $(( $(date +%s) - T_START ))s; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, chroot and mounts need it)"
[ "$(uname -m)" = x86_64 ] || log "host is $(uname -m), not x86_64: emulation may be unnecessary"

need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v update-binfmts >/dev/null || need+=(binfmt-support)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v zstd >/dev/null || need+=(zstd)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi

# binfmt_misc: lets the kernel run arm64 ELF files through qemu-aarch64-static.
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || die "cannot mount binfmt_misc"
fi
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 \
  || die "cannot register qemu-aarch64 with binfmt_misc"

WORK=$(mktemp -d /var/tmp/faceunlock-arm64.XXXXXX)
RFS="$WORK/rootfs"
mkdir -p "$RFS"

mounted() { awk -v p="$RFS" 'index($2, p) == 1 {print $2}' /proc/mounts | sort -r; }
unmount_all() {
  local m
  for m in $(mounted); do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
}
cleanup() {
  unmount_all
  if [ -n "$(mounted)" ]; then
    log "WARNING: mounts remain under $RFS; not deleting $WORK"
    return
  fi
  rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

# Explicit, minimal environment for everything run inside the chroot (trap 2).
in_chroot() {
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    chroot "$RFS" "$@"
}

# pip inside the chroot trusts the HOST's CA bundle (a network that intercepts TLS adds its
# own CA there; pip's bundled certifi would not know it). Passed explicitly, never leaked.
HOST_CA=${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
host_ca() {
  if [ -s "$HOST_CA" ]; then
    mkdir -p "$RFS/etc/faceunlock-ci"
    cp "$HOST_CA" "$RFS/etc/faceunlock-ci/host-ca.crt"
  fi
}
in_chroot_pip() {
  local cert=()
  [ -s "$RFS/etc/faceunlock-ci/host-ca.crt" ] && cert=(--cert /etc/faceunlock-ci/host-ca.crt)
  in_chroot "$VENV/bin/pip" "$@" "${cert[@]}"
}

mount_for_run() {
  mountpoint -q "$RFS/dev" || mount --bind /dev "$RFS/dev"
  mountpoint -q "$RFS/proc" || mount -t proc proc "$RFS/proc"
  # trap 1: an arm64 cpuinfo (Raspberry Pi 4: 4 × Cortex-A72, implementer 0x41, part 0xd08)
  local f="$WORK/cpuinfo"
  : >"$f"
  for i in 0 1 2 3; do
    printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' "$i" >>"$f"
  done
  printf 'Hardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B (emulated)\n' >>"$f"
  mount --bind "$f" "$RFS/proc/cpuinfo"
}

mirror() {
  local m=""
  if [ -r /etc/apt/sources.list.d/debian.sources ]; then
    m=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$m" ] && [ -r /etc/apt/sources.list ]; then
    m=$(awk '/^deb / && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' /etc/apt/sources.list)
  fi
  echo "${m:-http://deb.debian.org/debian}"
}

prepare_rootfs() {
  local M
  M=$(mirror)
  log "debootstrap stage 1: $SUITE arm64 minbase from $M"
  debootstrap --arch=arm64 --variant=minbase --foreign "$SUITE" "$RFS" "$M" >"$WORK/debootstrap1.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap1.log"; die "debootstrap stage 1 failed"; }
  cp /usr/bin/qemu-aarch64-static "$RFS/usr/bin/" 2>/dev/null || true
  log "debootstrap stage 2 (emulated) [$(elapsed)]"
  in_chroot /debootstrap/debootstrap --second-stage >"$WORK/debootstrap2.log" 2>&1 \
    || { tail -30 "$WORK/debootstrap2.log"; die "debootstrap stage 2 failed"; }
  unmount_all
  cp /etc/resolv.conf "$RFS/etc/resolv.conf"
  mountpoint -q "$RFS/dev" || mount --bind /dev "$RFS/dev"
  log "apt: python3 python3-venv python3-pip [$(elapsed)]"
  in_chroot apt-get update -q >"$WORK/apt.log" 2>&1 || { tail "$WORK/apt.log"; die "apt-get update failed"; }
  in_chroot apt-get install -y -q --no-install-recommends python3 python3-venv python3-pip ca-certificates \
    >>"$WORK/apt.log" 2>&1 || { tail -30 "$WORK/apt.log"; die "apt-get install failed"; }
  in_chroot apt-get clean
  log "venv + pip: $PY_PACKAGES [$(elapsed)]"
  in_chroot python3 -m venv "$VENV"
  host_ca
  in_chroot_pip install -q --only-binary=:all: $PY_PACKAGES >"$WORK/pip.log" 2>&1 \
    || { tail -30 "$WORK/pip.log"; die "pip install in the arm64 venv failed"; }
  unmount_all
  log "caching the prepared root filesystem as $TARBALL [$(elapsed)]"
  mkdir -p "$CACHE"
  tar -C "$RFS" --one-file-system -cf - . | zstd -q -T0 -3 -o "$TARBALL.tmp.$$" -f
  mv -f "$TARBALL.tmp.$$" "$TARBALL"
}

if [ "$REBUILD" = 0 ] && [ -s "$TARBALL" ]; then
  log "using the cached root filesystem $TARBALL"
  zstd -q -dc "$TARBALL" | tar -C "$RFS" -xf -
else
  prepare_rootfs
fi
log "root filesystem ready [$(elapsed)]"

# The project's wheel, built on the host (platform-independent: pure Python + .tflite files).
log "building the faceunlock wheel on the host"
PY=${PYTHON:-python3}
"$PY" -m pip wheel -q --no-deps -w "$WORK/wheel" "$ROOT" >"$WORK/wheel.log" 2>&1 \
  || { tail -20 "$WORK/wheel.log"; die "building the wheel failed"; }
WHEEL=$(ls "$WORK"/wheel/faceunlock-*.whl)
log "native reference run ($("$PY" -c 'import platform; print(platform.machine())'))"
(cd "$WORK" && "$PY" "$HERE/aarch64_smoke.py" --out "$WORK/ref.json" 2>/dev/null) || die "native reference run failed"

mkdir -p "$RFS/tmp/fu"
cp "$WHEEL" "$RFS/tmp/fu/"
cp "$HERE/aarch64_smoke.py" "$WORK/ref.json" "$RFS/tmp/fu/"
mount_for_run
log "pip install $(basename "$WHEEL") in the arm64 venv (dependencies from PyPI's aarch64 wheels) [$(elapsed)]"
host_ca
in_chroot_pip install -q --only-binary=:all: "/tmp/fu/$(basename "$WHEEL")" >"$WORK/pip2.log" 2>&1 \
  || { tail -20 "$WORK/pip2.log"; die "pip install of the wheel failed"; }
in_chroot "$VENV/bin/pip" list 2>/dev/null | grep -i -E '^(faceunlock|numpy|opencv-python-headless|ai-edge-litert|cryptography) ' | sed 's/^/  arm64: /'
log "emulated run: enrol 2 frames + unlock 1 frame (aarch64 under qemu-user) [$(elapsed)]"
T_EMU=$(date +%s)
in_chroot /bin/sh -c "cd /tmp/fu && $VENV/bin/python -c 'import platform; assert platform.machine() == \"aarch64\", platform.machine()' \
  && $VENV/bin/python aarch64_smoke.py --compare ref.json 2>/dev/null"
log "emulated run took $(( $(date +%s) - T_EMU )) s; total $(elapsed)"
