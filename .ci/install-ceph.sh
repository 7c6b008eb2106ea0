#!/usr/bin/env bash
# Installs the Debian packages test/servers/ceph-rgw.sh needs (Ceph mon, osd,
# radosgw and the CLI tools; ~55 s). Idempotent: does nothing when radosgw is
# already on PATH. Source this file and call install_ceph_packages, or run it.

install_ceph_packages() {
  if command -v radosgw >/dev/null 2>&1; then
    return 0
  fi
  local sudo=()
  if [ "$(id -u)" != 0 ]; then sudo=(sudo); fi
  echo "install-ceph: apt-get install ceph-mon ceph-mgr ceph-osd radosgw ceph-common" >&2
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq \
    ceph-mon ceph-mgr ceph-osd radosgw ceph-common >/dev/null
  command -v radosgw >/dev/null 2>&1 || { echo "install-ceph: radosgw still missing" >&2; return 1; }
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  install_ceph_packages
fi
