#!/usr/bin/env bash
# Installs the Debian packages the test suite drives (real tools against real
# mounts, and Ceph RGW) when any is missing; does nothing when all are there.
# Run by `npm test` (pretest) and by .ci/run, so the README's `npm test` works
# on a fresh machine too. Needs root (or sudo) only when something is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/install-ceph.sh

packages=(git tar fio sqlite3 stress-ng fuse3 util-linux attr xz-utils procps python3 python3-yaml diffutils rclone)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=()
  if [ "$(id -u)" != 0 ]; then sudo=(sudo); fi
  echo "install-test-deps: apt-get install ${missing[*]}" >&2
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
install_ceph_packages
