#!/usr/bin/env bash
# A throwaway single-node Ceph cluster for tests and benchmarks: one monitor, one OSD on
# memstore (data in RAM), pool "rbd" of size 1, cephx on, no mgr, no systemd. Everything it
# owns (config, keyrings, monitor store, OSD data, logs, admin sockets, pid files) lives in DIR.
#
#   scripts/ceph-cluster.sh start DIR      # about 2 s; prints the ceph.conf path
#   rbd -c DIR/ceph.conf create --size 1G rbd/disk
#   scripts/ceph-cluster.sh stop DIR       # SIGKILL by pid file, waits until the daemons are gone
#
# Needs ceph-mon, ceph-osd, ceph-common (ceph-authtool, monmaptool, rbd), python3-rados and
# uuid-runtime (Debian).
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/ceph-cluster.sh start DIR
       scripts/ceph-cluster.sh stop DIR
       scripts/ceph-cluster.sh stop-osd DIR | start-osd DIR

start     makes DIR (absent or empty), writes DIR/ceph.conf and keyrings, starts one monitor on a
          free 127.0.0.1 port (messenger v2 only) and one memstore OSD, creates the pool "rbd"
          (size 1, 8 placement groups, application rbd) and returns when an object can be
          written to it. Prints the path of DIR/ceph.conf. Clients need only `-c DIR/ceph.conf`
          (its keyring line names client.admin's key); librbd's cache is off in it.
stop      kills the daemons with SIGKILL by their pid files and waits until they are gone.
          Memstore data is lost; DIR is left for the caller to remove.
stop-osd  stops the OSD with SIGTERM, so memstore saves its data to DIR first (about 2 s).
start-osd starts the OSD again (after stop-osd); it comes back with the saved data.
USAGE
}

die() { echo "ceph-cluster: $*" >&2; exit 2; }

[[ $# -ge 1 ]] || { usage >&2; exit 2; }
case "$1" in -h|--help) usage; exit 0 ;; esac
[[ $# -eq 2 ]] || { usage >&2; exit 2; }
action=$1
mkdir -p "$2" 2>/dev/null || die "cannot make $2"
dir=$(cd "$2" && pwd)
conf=$dir/ceph.conf

for tool in ceph-mon ceph-osd ceph-authtool monmaptool uuidgen; do
    command -v "$tool" >/dev/null || die "$tool is missing (Debian: ceph-mon ceph-osd ceph-common uuid-runtime)"
done
# python3-rados is built for Debian's python; a python3 earlier on PATH may not have it.
py=/usr/bin/python3
[[ -x $py ]] || py=$(command -v python3)
"$py" -c 'import rados' 2>/dev/null || die "python3-rados is missing (Debian: python3-rados)"

# Waits until the process is gone or a zombie reaped by nobody (its parent is init or us).
wait_gone() {
    local pid=$1 i state
    for ((i = 0; i < 500; i++)); do
        state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 0
        [[ $state == Z ]] && return 0
        sleep 0.01
    done
    return 1
}

kill_daemon() {
    local name=$1 signal=$2 pidfile=$dir/run/$1.pid pid
    [[ -f $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    # The pid file is ours only when the process still runs from this cluster's config.
    if [[ -n $pid ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$conf"; then
        kill "-$signal" "$pid" 2>/dev/null || true
        wait_gone "$pid" || echo "ceph-cluster: $name (pid $pid) did not stop" >&2
    fi
    rm -f "$pidfile"
}

start_osd() {
    ceph-osd -c "$conf" -i 0 >>"$dir/log/osd.0.out" 2>&1 || die "ceph-osd did not start (see $dir/log/osd.0.log)"
}

# A python process that waits for the OSD to come up and take a write on pool rbd.
wait_writable() {
    "$py" - "$conf" <<'PY' || die "the pool did not become writable (see $1/log)"
import sys, rados
c = rados.Rados(conffile=sys.argv[1], conf={"client_mount_timeout": "20", "rados_osd_op_timeout": "30"})
c.connect(timeout=20)
with c.open_ioctx("rbd") as io:
    io.write_full("ceph-cluster-probe", b"ok")
    io.remove_object("ceph-cluster-probe")
c.shutdown()
PY
}

case "$action" in
stop)
    kill_daemon osd.0 KILL
    kill_daemon mon.a KILL
    ;;
stop-osd)
    kill_daemon osd.0 TERM
    ;;
start-osd)
    [[ -f $conf ]] || die "$dir has no cluster"
    start_osd
    wait_writable "$dir"
    ;;
start)
    [[ -z $(ls -A "$dir") ]] || die "$dir is not empty"
    mkdir -p "$dir/run" "$dir/log" "$dir/mon.a" "$dir/osd.0"
    fsid=$(uuidgen)
    port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$port]
mon initial members = a
ms bind msgr1 = false
public network = 127.0.0.0/8
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $dir/keyring
run dir = $dir/run
admin socket = $dir/run/\$cluster-\$name.\$pid.asok
log file = $dir/log/\$name.log
pid file = $dir/run/\$name.pid
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
osd pool default pg autoscale mode = off

[client]
rbd cache = false
rbd skip partial discard = false
rbd discard granularity bytes = 4096
log file = /dev/null

[mon]
mon data = $dir/mon.\$id
paxos propose interval = 0.05
paxos min wait = 0.01

[osd]
osd data = $dir/osd.\$id
keyring = $dir/osd.\$id/keyring
osd objectstore = memstore
memstore device bytes = 2147483648
memstore page set = true
osd op num shards = 2
osd op num threads per shard = 1
# SIGTERM then unmounts the store, so memstore saves its data for a restart (stop-osd).
osd fast shutdown = false
EOF
    ceph-authtool "$dir/mon.keyring" --create-keyring --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool "$dir/keyring" --create-keyring --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
    ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/keyring" >/dev/null
    monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$port]" "$dir/monmap" >/dev/null
    ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon.keyring" >>"$dir/log/mon.a.out" 2>&1 \
        || die "ceph-mon --mkfs failed (see $dir/log)"
    ceph-mon -c "$conf" -i a >>"$dir/log/mon.a.out" 2>&1 || die "ceph-mon did not start (see $dir/log/mon.a.log)"

    osd_uuid=$(uuidgen)
    osd_key=$(ceph-authtool --gen-print-key)
    printf '[osd.0]\n\tkey = %s\n' "$osd_key" >"$dir/osd.0/keyring"
    # One client for the monitor steps: registers osd.0 with its key and makes the pool.
    "$py" - "$conf" "$osd_uuid" "$osd_key" <<'PY' || die "the monitor steps failed (see $dir/log/mon.a.log)"
import json, sys, rados
conf, uuid, key = sys.argv[1:4]
c = rados.Rados(conffile=conf, conf={"client_mount_timeout": "20"})
c.connect(timeout=20)
def mon(cmd, inbuf=b""):
    ret, out, err = c.mon_command(json.dumps(cmd), inbuf)
    if ret != 0:
        sys.exit(f"{cmd['prefix']}: {err} ({ret})")
    return out
mon({"prefix": "osd new", "uuid": uuid, "id": 0}, json.dumps({"cephx_secret": key}).encode())
mon({"prefix": "osd pool create", "pool": "rbd", "pg_num": 8, "pgp_num": 8})
mon({"prefix": "osd pool application enable", "pool": "rbd", "app": "rbd"})
c.shutdown()
PY
    ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$osd_uuid" >>"$dir/log/osd.0.out" 2>&1 || die "ceph-osd --mkfs failed (see $dir/log)"
    start_osd
    wait_writable "$dir"
    echo "$conf"
    ;;
*)
    usage >&2
    exit 2
    ;;
esac
