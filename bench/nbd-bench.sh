#!/usr/bin/env bash
# Side by side: `vblk serve nbd+unix:///...` and qemu-storage-daemon's NBD client
# (--blockdev driver=nbd) as vhost-user-blk back-ends over the same nbdkit memory export,
# driven by `vblk bench`, rounds alternating between the two. Prints IOPS, p99 latency and the
# back-end's CPU time per request (utime + stime of the back-end process over the run / ops).
# Needs nbdkit, qemu-storage-daemon (qemu-system-common) and the .NET SDK.
set -euo pipefail
usage() {
    cat <<'TXT'
Usage: bench/nbd-bench.sh [--help]
Environment: ROUNDS (2), RUNTIME seconds per run (5), SIZE of the export (1G),
             ROWS ("randread:1 randwrite:1 randread:32 randwrite:32"),
             BASE_VBLK: a second vblk executable (another build, e.g. of an earlier commit)
             served as "base" in every round beside this tree's "vblk" and qsd.
TXT
}
[[ "${1:-}" == "--help" || "${1:-}" == "-h" ]] && { usage; exit 0; }
ROUNDS=${ROUNDS:-2}; RUNTIME=${RUNTIME:-5}; SIZE=${SIZE:-1G}
ROWS=${ROWS:-"randread:1 randwrite:1 randread:32 randwrite:32"}
root=$(cd "$(dirname "$0")/.." && pwd)
for t in nbdkit qemu-storage-daemon; do command -v $t >/dev/null || { echo "nbd-bench: $t is not installed" >&2; exit 2; }; done
dotnet build "$root/src/VirtioSharp.Cli" -c Release --nologo -v q -clp:NoSummary >/dev/null
vblk="$root/src/VirtioSharp.Cli/bin/Release/net10.0/vblk"
work=$(mktemp -d /tmp/nbd-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
nbdkit -f -U "$work/nbd.sock" memory "$SIZE" & pids+=($!)
for _ in $(seq 100); do [[ -S "$work/nbd.sock" ]] && break; sleep 0.05; done
"$vblk" serve "nbd+unix:///?socket=$work/nbd.sock" --socket "$work/vblk.sock" 2>"$work/vblk.log" & vblk_pid=$!; pids+=($vblk_pid)
servers="vblk qsd"
if [[ -n "${BASE_VBLK:-}" ]]; then
    "$BASE_VBLK" serve "nbd+unix:///?socket=$work/nbd.sock" --socket "$work/base.sock" 2>"$work/base.log" & base_pid=$!; pids+=($base_pid)
    servers="base vblk qsd"
fi
# qemu-storage-daemon writes its pid file once the export listens; its socket file exists a
# moment before that. vblk serve's socket file appears only once it listens.
qemu-storage-daemon --blockdev "driver=nbd,node-name=n0,server.type=unix,server.path=$work/nbd.sock,export=,cache.direct=on" \
    --export "type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=$work/qsd.sock,writable=on" \
    --pidfile "$work/qsd.pid" & qsd_pid=$!; pids+=($qsd_pid)
for _ in $(seq 200); do [[ -S "$work/vblk.sock" && -s "$work/qsd.pid" && ( -z "${BASE_VBLK:-}" || -S "$work/base.sock" ) ]] && break; sleep 0.05; done
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # clock ticks
hz=$(getconf CLK_TCK)
echo "date $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r), nbdkit $(nbdkit --version | awk '{print $2}'), $(qemu-storage-daemon --version | head -1)"
printf '%-10s %-5s %-6s %-5s %10s %10s %14s\n' rw depth server round IOPS p99_us cpu_us_per_req
for round in $(seq "$ROUNDS"); do
    for row in $ROWS; do
        rw=${row%%:*}; depth=${row##*:}
        for server in $servers; do
            case $server in
                vblk) sock=$work/vblk.sock; pid=$vblk_pid ;;
                base) sock=$work/base.sock; pid=$base_pid ;;
                *) sock=$work/qsd.sock; pid=$qsd_pid ;;
            esac
            before=$(cpu "$pid")
            json=$("$vblk" bench --socket "$sock" --rw "$rw" --iodepth "$depth" --runtime "$RUNTIME" --ramp 1 --size 256M --json)
            after=$(cpu "$pid")
            python3 - "$json" "$before" "$after" "$hz" "$rw" "$depth" "$server" "$round" <<'PY'
import json, sys
j = json.loads(sys.argv[1]); before, after, hz = float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
ops, iops = j["total"]["ops"], j["total"]["iops"]
p99 = max(j["read"]["lat_us"]["p99"], j["write"]["lat_us"]["p99"])
cpu_us = (after - before) / hz * 1e6 / ops if ops else 0
print(f"{sys.argv[5]:<10} {sys.argv[6]:<5} {sys.argv[7]:<6} {sys.argv[8]:<5} {iops:>10.0f} {p99:>10.0f} {cpu_us:>14.1f}")
PY
        done
    done
done
