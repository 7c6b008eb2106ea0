#!/usr/bin/env bash
# A throwaway single-node Ceph cluster with an S3 gateway, for the tests.
#
#   ceph-rgw.sh start DIR PORT   mon + 1 osd + radosgw on 127.0.0.1:PORT, all
#                                state, pid files, sockets and logs under DIR
#                                (wiped first); S3 user s0fs-test /
#                                s0fs-test-secret; no bucket. Returns once a
#                                signed PUT/GET works, or fails after 60 s.
#   ceph-rgw.sh stop DIR         SIGTERM every daemon of DIR by pid file,
#                                SIGKILL after 10 s.
#
# Environment: S0FS_CEPH_OBJECTSTORE=bluestore (default: a 10 GiB sparse file
# under DIR, OSD RSS bounded, ready in ~4 s) or memstore (all data in RAM at
# ~2x its size, capped at 6 GiB of data; ready in ~2 s);
# S0FS_CEPH_TIMEOUT (seconds, default 60).
# Needs the Debian packages of .ci/install-ceph.sh. No mgr: S3 works without.
# Facts behind the choices: test/servers/README.md.
set -euo pipefail

ACCESS_KEY=s0fs-test
SECRET_KEY=s0fs-test-secret
# Debian's python3 (a dependency of ceph-common), not whatever shim is first on PATH
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

die() {
  echo "ceph-rgw.sh: $*" >&2
  exit 1
}
usage() { die "usage: ceph-rgw.sh start DIR PORT | stop DIR"; }

# ------------------------------------------------------------------ stop
# A pid from a file is only signalled while it still runs a Ceph daemon.
live_pid() {
  local f=$1 pid comm
  [ -s "$f" ] || return 1
  pid=$(tr -dc 0-9 <"$f")
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
  case "$comm" in ceph-mon | ceph-osd | radosgw | ceph-mgr) echo "$pid" ;; *) return 1 ;; esac
}

# Running, i.e. exists and is not a zombie: daemons are children of init,
# which here may take ~2 s to reap them.
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# One daemon at a time, gateway first and monitor last (an OSD that cannot
# tell the monitor it is going down waits 5 s; a gateway whose OSD vanished
# can hang): SIGTERM, wait for it to exit (~0.1-1 s each). Whatever is
# still alive 10 s after the first SIGTERM gets SIGKILL.
stop_cluster() {
  local dir=$1 name pid pids=() deadline=$((SECONDS + 10))
  [ -d "$dir/run" ] || return 0
  for name in client.rgw.a osd.0 mgr.x mon.a; do
    pid=$(live_pid "$dir/run/$name.pid") || continue
    kill -TERM "$pid" 2>/dev/null || true
    pids+=("$pid")
    while alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.05; done
  done
  for pid in "${pids[@]}"; do
    if alive "$pid"; then
      echo "ceph-rgw.sh: pid $pid still running 10 s after SIGTERM, sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  # init reaps the exited daemons only every ~2 s: wait (up to 5 s more) so
  # that no <defunct> entry is left when this returns
  deadline=$((SECONDS + 5))
  for pid in "${pids[@]}"; do
    while [ -e "/proc/$pid" ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.05; done
  done
  rm -f "$dir"/run/*.pid
}

# ----------------------------------------------------------------- start
free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Signed S3 requests (SigV4, stdlib only). Creates a scratch bucket, PUTs and
# GETs an object, deletes both; exit 0 only if everything worked.
s3_probe() {
  "$PY" - "$1" "$ACCESS_KEY" "$SECRET_KEY" <<'PY'
import datetime, hashlib, hmac, http.client, os, sys
port, ak, sk = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def req(method, path, body=b""):
    now = datetime.datetime.now(datetime.timezone.utc)
    amzdate, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    host = f"127.0.0.1:{port}"
    ph = hashlib.sha256(body).hexdigest()
    headers = {"host": host, "x-amz-content-sha256": ph, "x-amz-date": amzdate}
    signed = ";".join(sorted(headers))
    canon = "\n".join([method, path, "", *[f"{k}:{headers[k]}" for k in sorted(headers)], "", signed, ph])
    scope = f"{day}/us-east-1/s3/aws4_request"
    sts = "\n".join(["AWS4-HMAC-SHA256", amzdate, scope, hashlib.sha256(canon.encode()).hexdigest()])
    k = ("AWS4" + sk).encode()
    for part in (day, "us-east-1", "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = f"AWS4-HMAC-SHA256 Credential={ak}/{scope}, SignedHeaders={signed}, Signature={sig}"
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    c.close()
    if r.status >= 300:
        raise SystemExit(f"{method} {path}: HTTP {r.status} {data[:200]!r}")
    return data
bucket = f"/s0fs-probe-{os.getpid()}"
payload = os.urandom(1000)
req("PUT", bucket)
try:
    req("PUT", bucket + "/probe", payload)
    ok = req("GET", bucket + "/probe") == payload
    req("DELETE", bucket + "/probe")
finally:
    req("DELETE", bucket)
sys.exit(0 if ok else "GET returned different bytes")
PY
}

# One librados client (the ceph CLI would start ~15 Python processes, ~0.3 s
# of CPU each): register osd.0, create the RGW pools (pg_num 8; RGW would
# otherwise create them one by one as it needs them), start ceph-osd once its
# mkfs is done, and wait until the monitor marks it up.
cluster_setup() {
  "$PY" - "$@" <<'PY'
import json, os, subprocess, sys, time
import rados
conf, osd_uuid, mkfs_rc, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
t0 = time.monotonic()
deadline = t0 + timeout
def left():
    t = deadline - time.monotonic()
    if t <= 0:
        sys.exit("cluster_setup: timed out")
    return t
cluster = rados.Rados(conffile=conf)
cluster.connect(timeout=max(1, int(left())))
def mon(**cmd):
    ret, out, err = cluster.mon_command(json.dumps(cmd), b"")
    if ret != 0:
        sys.exit(f"cluster_setup: {cmd['prefix']} failed: {ret} {err}")
    return out
mon(prefix="osd new", uuid=osd_uuid, id=0)
for pool in (".rgw.root", "default.rgw.log", "default.rgw.control", "default.rgw.meta",
             "default.rgw.buckets.index", "default.rgw.buckets.data", "default.rgw.buckets.non-ec"):
    mon(prefix="osd pool create", pool=pool, pg_num=8, pgp_num=8)
    mon(prefix="osd pool application enable", pool=pool, app="rgw")
print(f"cluster_setup: pools created after {time.monotonic() - t0:.2f} s", flush=True)
while not os.path.exists(mkfs_rc) or not open(mkfs_rc).read().strip():
    left()
    time.sleep(0.02)
if open(mkfs_rc).read().strip() != "0":
    sys.exit("cluster_setup: ceph-osd --mkfs failed (see log/osd-mkfs.log)")
# ceph-osd forks; the foreground process exits once the daemon is initialised
if subprocess.run(["ceph-osd", "-i", "0"], timeout=left()).returncode != 0:
    sys.exit("cluster_setup: ceph-osd failed to start (see log/osd.0.log)")
print(f"cluster_setup: ceph-osd started after {time.monotonic() - t0:.2f} s", flush=True)
while True:
    osds = json.loads(mon(prefix="osd dump", format="json"))["osds"]
    if osds and osds[0]["up"] == 1:
        break
    left()
    time.sleep(0.05)
print(f"cluster_setup: osd.0 up after {time.monotonic() - t0:.2f} s", flush=True)
cluster.shutdown()
PY
}

start_cluster() {
  local dir=$1 port=$2 store=${S0FS_CEPH_OBJECTSTORE:-bluestore} timeout=${S0FS_CEPH_TIMEOUT:-60}
  local t0=$SECONDS t0ms fsid osd_uuid mon1 mon2 conf log
  command -v radosgw >/dev/null || die "radosgw not installed (run .ci/install-ceph.sh)"
  case "$store" in bluestore | memstore) ;; *) die "S0FS_CEPH_OBJECTSTORE must be bluestore or memstore" ;; esac
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  stop_cluster "$dir" # a leftover cluster of this DIR
  rm -rf "${dir:?}"/{run,log,mon,osd,rgw,crash,ceph.conf,monmap,keyring}
  mkdir -p "$dir"/{run,log,mon/ceph-a,osd/ceph-0,rgw,crash}
  log=$dir/log/start.log
  : >"$log"
  # a failure anywhere below leaves no daemon behind
  trap 'rc=$?; if [ $rc != 0 ]; then stop_cluster "'"$dir"'"; fi' EXIT

  fsid=$(uuidgen)
  osd_uuid=$(uuidgen)
  mon1=$(free_port)
  mon2=$(free_port)
  conf=$dir/ceph.conf
  cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$mon2,v1:127.0.0.1:$mon1]
mon initial members = a
public addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
# without it radosgw loops on "get_initial_auth_request returned -13" under auth none
ms mon client mode = crc
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
# commit monitor changes (pool creation, OSD boot) every 50 ms, not every 1 s
paxos propose interval = 0.05
paxos min wait = 0.01
run dir = $dir/run
pid file = $dir/run/\$name.pid
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
crash dir = $dir/crash
keyring = $dir/keyring
mon data = $dir/mon/\$cluster-\$id
osd data = $dir/osd/\$cluster-\$id
rgw data = $dir/rgw
[osd]
osd objectstore = $store
bluestore block create = true
bluestore block size = 10737418240
bluestore fsck on mkfs = false
# one op shard: each shard opens and closes the block device at start-up (~0.3 s each)
osd op num shards = 1
osd op num threads per shard = 2
osd memory target = 1073741824
# MemStore keeps everything in RAM: cap it (the OSD reports full at 95 %)
memstore device bytes = 6442450944
[client.rgw.a]
# endpoint= only (port= would also bind 0.0.0.0); tcp_nodelay=1 or small GETs take ~45 ms
rgw frontends = beast endpoint=127.0.0.1:$port tcp_nodelay=1
# the lifecycle thread sleeps 5 s uninterruptibly and so delays shutdown by
# ~5 s; no bucket has a lifecycle policy. Resharding: far beyond test sizes.
rgw enable lc threads = false
rgw dynamic resharding = false
# reclaim deleted objects' tails after 1 min, not 2 h (MemStore holds them in RAM)
rgw gc obj min wait = 60
rgw gc processor period = 60
EOF
  export CEPH_CONF=$conf
  : >"$dir/keyring"

  t0ms=$(date +%s%3N)
  step() { echo "[$(($(date +%s%3N) - t0ms)) ms] $*" >>"$log"; }
  run() { "$@" >>"$log" 2>&1 || die "failed: $* (see $log and $dir/log/)"; }
  wait_for() { # wait_for WHAT COMMAND...: poll until the command succeeds or the time is up
    local what=$1
    shift
    until "$@" >/dev/null 2>&1; do
      [ $((SECONDS - t0)) -lt "$timeout" ] || die "timed out after ${timeout}s waiting for $what (see $log and $dir/log/)"
      sleep 0.2
    done
  }

  step monmap
  run monmaptool --create --clobber --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon2,v1:127.0.0.1:$mon1]" "$dir/monmap"
  # The OSD's mkfs (BlueStore: ~1.5 s) needs only the monmap: run it alongside
  # the monitor, `osd new` and the pool creation; cluster_setup starts the OSD
  # once mkfs has written its exit code.
  step "mkfs mon + osd"
  (
    ceph-osd -i 0 --mkfs --osd-uuid "$osd_uuid" --monmap "$dir/monmap" >>"$dir/log/osd-mkfs.log" 2>&1
    echo $? >"$dir/run/osd-mkfs.rc"
  ) &
  run ceph-mon --mkfs -i a --monmap "$dir/monmap"
  run ceph-mon -i a
  step "osd new, pools, osd start, wait for osd up"
  cluster_setup "$conf" "$osd_uuid" "$dir/run/osd-mkfs.rc" "$((timeout - (SECONDS - t0)))" >>"$log" 2>&1 ||
    die "cluster setup failed (see $log and $dir/log/)"
  step "radosgw + user"
  run radosgw -n client.rgw.a
  run radosgw-admin user create --uid=s0fs-test --display-name=s0fs-test \
    --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY"
  step "s3 probe"
  until s3_probe "$port" >>"$log" 2>&1; do
    live_pid "$dir/run/client.rgw.a.pid" >/dev/null ||
      die "radosgw exited (port $port taken?); see $dir/log/client.rgw.a.log"
    [ $((SECONDS - t0)) -lt "$timeout" ] ||
      die "timed out after ${timeout}s waiting for a signed S3 PUT/GET on 127.0.0.1:$port (see $log and $dir/log/)"
    sleep 0.2
  done
  step "ready"
  trap - EXIT
  echo "ceph-rgw.sh: ready on http://127.0.0.1:$port in $((SECONDS - t0)) s ($store, state in $dir)" >&2
}

[ $# -ge 1 ] || usage
case "$1" in
start)
  [ $# -eq 3 ] || usage
  [[ "$3" =~ ^[0-9]+$ ]] || die "PORT must be a number"
  start_cluster "$2" "$3"
  ;;
stop)
  [ $# -eq 2 ] || usage
  stop_cluster "$2"
  ;;
*) usage ;;
esac
