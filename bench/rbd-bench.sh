#!/usr/bin/env bash
# Side by side on one Ceph RBD image: `vblk bench` (our vhost-user front-end) against two
# vhost-user-blk back-ends that reach the image through librbd, `vblk serve rbd:...` and
# qemu-storage-daemon with QEMU's rbd driver. Both run on a throwaway single-node cluster
# (scripts/ceph-cluster.sh) and take turns on the same image, alternating which goes first.
# Prints every run with IOPS, p99 and the back-end's CPU per request (utime + stime from
# /proc/PID/stat, librbd's threads included), then means and vblk/qsd ratios. vblk serve runs
# twice: with its default --ceph-io-timeout (30 s: a request fails once the cluster has not
# answered for that long) as "vblk", and with --ceph-io-timeout 0 (wait for ever, as QEMU's rbd
# driver does) as "vblk-t0".
#
#   bench/rbd-bench.sh                      # 5 s per run, 3 rounds
#   RUNTIME=10 ROUNDS=4 bench/rbd-bench.sh
#   WORKLOADS="randread:4K:1 randwrite:4K:1" BACKENDS="qsd vblk-t0" bench/rbd-bench.sh
#
# Needs qemu-storage-daemon (qemu-system-common) with its rbd driver (qemu-block-extra), the
# Ceph packages scripts/ceph-cluster.sh names, and the .NET SDK.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: bench/rbd-bench.sh [-h|--help]

Starts a single-node Ceph cluster (one monitor, one memstore OSD) in a temporary folder, fills
one RBD image with data, and runs `vblk bench` against `vblk serve rbd:rbd/bench` and against
qemu-storage-daemon --blockdev driver=rbd,...,cache.direct=on (librbd's cache off in both):
4 KiB random read and write at depth 1 and 32. Every run is printed, then means and ratios.

Settings come from the environment:
  WORKLOADS=...  space-separated RW:BS:DEPTH (default: randread and randwrite, 4K, depths 1 and 32)
  BACKENDS=...   any of qsd vblk vblk-t0 base (default qsd vblk vblk-t0; vblk-t0 is
                 --ceph-io-timeout 0; base is `vblk serve` of another build, BASE_VBLK_DLL=its vblk.dll)
  RUNTIME=S      seconds measured per run (default 5)
  RAMP=S         warm-up seconds per run (default 1)
  ROUNDS=N       rounds (default 3)
  IMAGE_SIZE=SZ  image size (default 256M; memstore holds it in RAM)
USAGE
}
case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    "") ;;
    *) echo "rbd-bench: unknown argument: $1 (see --help)" >&2; exit 2 ;;
esac

RUNTIME=${RUNTIME:-5}
RAMP=${RAMP:-1}
ROUNDS=${ROUNDS:-3}
IMAGE_SIZE=${IMAGE_SIZE:-256M}
read -r -a backends <<<"${BACKENDS:-qsd vblk vblk-t0}"
read -r -a workloads <<<"${WORKLOADS:-randread:4K:1 randread:4K:32 randwrite:4K:1 randwrite:4K:32}"

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
qsd=$(command -v qemu-storage-daemon || true)
[[ -n $qsd ]] || { echo "rbd-bench: qemu-storage-daemon is not installed (apt-get install qemu-system-common)" >&2; exit 1; }

# The vblk wrapper builds when sources changed; the back-end then runs as `dotnet vblk.dll`,
# one process whose pid /proc/PID/stat describes.
./vblk --help >/dev/null
vblk_dll=$root/artifacts/vblk/vblk.dll

work=$(mktemp -d /tmp/rbd-bench.XXXXXX)
cluster=$work/cluster
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    scripts/ceph-cluster.sh stop "$cluster" || true
    rm -rf "$work"
}
trap cleanup EXIT

conf=$(scripts/ceph-cluster.sh start "$cluster")
rbd -c "$conf" create --size "$IMAGE_SIZE" rbd/bench
# Real data everywhere: reads of never-written objects would not reach the OSD at all.
rbd -c "$conf" bench --io-type write --io-size 4M --io-threads 4 --io-total "$IMAGE_SIZE" --io-pattern seq rbd/bench >/dev/null

wait_socket() {
    for _ in $(seq 1 400); do
        [[ -S "$1" ]] && return 0
        sleep 0.05
    done
    echo "rbd-bench: no socket at $1" >&2
    cat "${1%.sock}.log" >&2 || true
    exit 1
}

"$qsd" --blockdev "driver=rbd,node-name=disk0,pool=rbd,image=bench,conf=$conf,user=admin,cache.direct=on" \
    --export "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path=$work/qsd.sock,writable=on" \
    >"$work/qsd.log" 2>&1 &
qsd_pid=$!
pids+=("$qsd_pid")
wait_socket "$work/qsd.sock"
declare -A pid_of=([qsd]=$qsd_pid)
for be in "${backends[@]}"; do
    case $be in
        qsd) continue ;;
        vblk) extra=() ;;
        vblk-t0) extra=(--ceph-io-timeout 0) ;;
        base)
            [[ -f ${BASE_VBLK_DLL:-} ]] || { echo "rbd-bench: back-end base needs BASE_VBLK_DLL, the vblk.dll of another build" >&2; exit 2; }
            extra=() ;;
        *) echo "rbd-bench: unknown back-end $be (qsd, vblk, vblk-t0, base)" >&2; exit 2 ;;
    esac
    dll=$vblk_dll
    [[ $be == base ]] && dll=$BASE_VBLK_DLL
    dotnet "$dll" serve rbd:rbd/bench --ceph-conf "$conf" --socket "$work/$be.sock" "${extra[@]}" >"$work/$be.log" 2>&1 &
    pid_of[$be]=$!
    pids+=("$!")
    wait_socket "$work/$be.sock"
done

# utime + stime of a process, in clock ticks (fields 14 and 15 after the command name).
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
hz=$(getconf CLK_TCK)

json_field() { # file section key
    awk -v section="\"$2\"" -v key="\"$3\"" '
        index($0, section ":") { inside = 1; next }
        inside && index($0, key ":") { gsub(/[ ,]/, "", $0); split($0, kv, ":"); print kv[2]; exit }
        inside && /^  }/ { inside = 0 }' "$1"
}

results=$work/results.txt
: >"$results"

echo "# rbd-bench $(date -u +%Y-%m-%dT%H:%MZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $(uname -sr), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "# $("$qsd" --version | head -1), $(ceph --version | cut -d' ' -f1-3), .NET $(dotnet --version)"
echo "# cluster: 1 mon + 1 OSD (memstore) on 127.0.0.1, pool rbd size 1, 8 PGs, cephx; rbd cache off; image $IMAGE_SIZE, filled"
echo "# runtime ${RUNTIME}s (+${RAMP}s ramp) per run, ${ROUNDS} rounds; back-end cpu = its utime+stime over the run / requests"
echo
printf '%-18s %-5s %5s %10s %9s %9s %11s\n' workload be round IOPS p50us p99us be-cpu-us
for w in "${workloads[@]}"; do
    IFS=: read -r rw bs depth <<<"$w"
    for round in $(seq 1 "$ROUNDS"); do
        # Each round starts with a different back-end: the order rotates.
        n=${#backends[@]}
        order=()
        for ((i = 0; i < n; i++)); do order+=("${backends[(i + round - 1) % n]}"); done
        for be in "${order[@]}"; do
            pid=${pid_of[$be]}
            out=$work/run.json
            # The ramp runs as its own short bench so the CPU count covers only the measured part.
            dotnet "$vblk_dll" bench --socket "$work/$be.sock" --rw "$rw" --bs "$bs" --iodepth "$depth" \
                --runtime "$RAMP" --ramp 0 --json >/dev/null 2>&1 || true
            before=$(cpu_ticks "$pid")
            dotnet "$vblk_dll" bench --socket "$work/$be.sock" --rw "$rw" --bs "$bs" --iodepth "$depth" \
                --runtime "$RUNTIME" --ramp 0 --json >"$out" 2>/dev/null || true
            after=$(cpu_ticks "$pid")
            ops=$(json_field "$out" total ops)
            iops=$(json_field "$out" total iops)
            section=$([[ $rw == *write* ]] && echo write || echo read)
            p50=$(json_field "$out" "$section" p50)
            p99=$(json_field "$out" "$section" p99)
            cpu_us=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$ops" 'BEGIN { printf "%.1f", (n > 0 ? t * 1e6 / hz / n : 0) }')
            label="$rw-$bs-d$depth"
            printf '%-18s %-5s %5s %10.0f %9.1f %9.1f %11s\n' "$label" "$be" "$round" "$iops" "$p50" "$p99" "$cpu_us"
            echo "$label $be $iops $p99 $cpu_us" >>"$results"
        done
    done
done

echo
echo "# $(date -u +%H:%MZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# mean over rounds; ratio = vblk serve / qemu-storage-daemon (IOPS: higher is better; p99 and CPU: lower is better)"
printf '%-18s %-8s %9s %9s %6s %9s %9s %6s %8s %8s %6s\n' workload be qsd-IOPS be-IOPS ratio qsd-p99 be-p99 ratio qsd-cpu be-cpu ratio
awk '
    { key = $1; n[key "|" $2]++; iops[key "|" $2] += $3; p99[key "|" $2] += $4; cpu[key "|" $2] += $5; be[$2] = 1; if (!(key in seen)) { seen[key] = 1; order[++k] = key } }
    END {
        for (i = 1; i <= k; i++) {
            key = order[i]; q = key "|qsd"
            if (!n[q]) continue
            qi = iops[q] / n[q]; qp = p99[q] / n[q]; qc = cpu[q] / n[q]
            for (b in be) {
                if (b == "qsd") continue
                v = key "|" b
                if (!n[v]) continue
                vi = iops[v] / n[v]; vp = p99[v] / n[v]; vc = cpu[v] / n[v]
                printf "%-18s %-8s %9.0f %9.0f %6.2f %9.1f %9.1f %6.2f %8.1f %8.1f %6.2f\n", key, b, qi, vi, (qi > 0 ? vi / qi : 0), qp, vp, (qp > 0 ? vp / qp : 0), qc, vc, (qc > 0 ? vc / qc : 0)
            }
        }
    }' "$results"
