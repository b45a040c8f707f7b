#!/usr/bin/env bash
# Side by side: `vblk bench` (our vhost-user front-end and virtio-blk driver) against two
# vhost-user-blk back-ends, qemu-storage-daemon and `vblk serve`, each exporting a null device
# and a raw image held in the page cache. Runs alternate between the back-ends so drift in the
# machine's load hits both alike. Prints every run, then a summary with vblk/qsd ratios.
#
#   bench/frontend-bench.sh                 # 5 s per run, 2 rounds
#   RUNTIME=10 ROUNDS=3 bench/frontend-bench.sh
#
# Needs qemu-storage-daemon (Debian: qemu-system-common) and the .NET SDK.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: bench/frontend-bench.sh [-h|--help]

Runs `vblk bench` against qemu-storage-daemon and against `vblk serve`, each exporting a null
device and a page-cached raw image: 4 KiB random read at depth 1 and 32, 4 KiB random write at
depth 32, 128 KiB sequential read at depth 8. Runs alternate between the back-ends; every run
is printed, then means and vblk/qsd ratios.

Settings come from the environment:
  RUNTIME=S      seconds measured per run (default 5)
  RAMP=S         warm-up seconds per run (default 1)
  ROUNDS=N       rounds (default 2)
  IMAGE_SIZE=SZ  raw image size (default 1G)
  DEVICES=LIST   devices, from: null file cold (default: all three as root, else null file)
                 cold = the raw image with the page cache dropped before every run
                 (echo 1 > /proc/sys/vm/drop_caches), so reads go to the disk until
                 they warm it again
USAGE
}
case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    "") ;;
    *) echo "frontend-bench: unknown argument: $1 (see --help)" >&2; exit 2 ;;
esac

RUNTIME=${RUNTIME:-5}
RAMP=${RAMP:-1}
ROUNDS=${ROUNDS:-2}
IMAGE_SIZE=${IMAGE_SIZE:-1G}
if [[ -w /proc/sys/vm/drop_caches ]]; then DEVICES=${DEVICES:-"null file cold"}; else DEVICES=${DEVICES:-"null file"}; fi
for dev in $DEVICES; do
    case "$dev" in
        null|file) ;;
        cold) [[ -w /proc/sys/vm/drop_caches ]] || { echo "frontend-bench: cold needs root (drop_caches)" >&2; exit 2; } ;;
        *) echo "frontend-bench: unknown device $dev (null, file, cold)" >&2; exit 2 ;;
    esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [[ -x ./vblk ]]; then
    vblk=(./vblk)
else
    dotnet build -c Release src/VirtioSharp.Cli -v quiet -nologo >/dev/null
    vblk=(dotnet run -c Release --no-build --project src/VirtioSharp.Cli --)
fi
qsd=$(command -v qemu-storage-daemon || true)
if [[ -z "$qsd" ]]; then
    echo "frontend-bench: qemu-storage-daemon is not installed (apt-get install qemu-system-common)" >&2
    exit 1
fi

work=$(mktemp -d /tmp/frontend-bench.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

wait_socket() {
    for _ in $(seq 1 200); do
        [[ -S "$1" ]] && return 0
        sleep 0.05
    done
    echo "frontend-bench: no socket at $1" >&2
    exit 1
}

# Two raw images with the same data, one per back-end (neither holds the other's lock), made
# the same way so their page-cache state matches: how a file's pages came to be cached changes
# how fast random writes to it go, by as much as 10x (docs/benchmarks.md, section 2.1).
image=$work/disk.raw
head -c "$(numfmt --from=iec "$IMAGE_SIZE")" /dev/urandom >"$work/source.raw"
cp "$work/source.raw" "$image"
cp "$work/source.raw" "$work/disk2.raw"
rm "$work/source.raw"
cat "$image" "$work/disk2.raw" >/dev/null
null_bytes=$(numfmt --from=iec "$IMAGE_SIZE")

start_qsd() { # name blockdev-args...
    local name=$1
    shift
    "$qsd" "$@" --export "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path=$work/$name.sock,writable=on" \
        >"$work/$name.log" 2>&1 &
    pids+=($!)
    wait_socket "$work/$name.sock"
}

start_vblk() { # name serve-args...
    local name=$1
    shift
    "${vblk[@]}" serve "$@" --socket "$work/$name.sock" >"$work/$name.log" 2>&1 &
    pids+=($!)
    wait_socket "$work/$name.sock"
}

start_qsd qsd-null --blockdev "driver=null-co,node-name=disk0,size=$null_bytes,read-zeroes=on"
start_qsd qsd-file --blockdev "driver=file,node-name=file0,filename=$image" --blockdev "driver=raw,node-name=disk0,file=file0"
start_vblk vblk-null --backend null --size "$null_bytes"
start_vblk vblk-file "$work/disk2.raw"

workloads=(
    "randread 4K 1"
    "randread 4K 32"
    "randwrite 4K 32"
    "read 128K 8"
)

# field PATH.KEY from the bench JSON (top-level sections are one level deep).
json_field() { # file section key
    awk -v section="\"$2\"" -v key="\"$3\"" '
        index($0, section ":") { inside = 1; next }
        inside && index($0, key ":") { gsub(/[ ,]/, "", $0); split($0, kv, ":"); print kv[2]; exit }
        inside && /^  }/ { inside = 0 }' "$1"
}

results=$work/results.txt
: >"$results"

echo "# frontend-bench $(date -u +%Y-%m-%dT%H:%MZ)"
echo "# $(uname -sr), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "# $("$qsd" --version | head -1), .NET $(dotnet --version)"
echo "# runtime ${RUNTIME}s (+${RAMP}s ramp) per run, ${ROUNDS} rounds, image $IMAGE_SIZE; devices: $DEVICES"
echo
printf '%-16s %-5s %-10s %5s %10s %9s %9s %9s %8s\n' workload dev backend round IOPS MB/s p50us p99us cpu-us
for w in "${workloads[@]}"; do
    read -r rw bs depth <<<"$w"
    for dev in $DEVICES; do
        for round in $(seq 1 "$ROUNDS"); do
            # Alternate which back-end goes first.
            if ((round % 2)); then order="qsd vblk"; else order="vblk qsd"; fi
            for be in $order; do
                out=$work/run.json
                sock=$work/$be-$dev.sock
                if [[ $dev == file ]]; then
                    cat "$image" "$work/disk2.raw" >/dev/null # warm again after a cold run
                fi
                if [[ $dev == cold ]]; then
                    sock=$work/$be-file.sock
                    sync
                    echo 1 >/proc/sys/vm/drop_caches
                fi
                "${vblk[@]}" bench --socket "$sock" --rw "$rw" --bs "$bs" --iodepth "$depth" \
                    --runtime "$RUNTIME" --ramp "$RAMP" --json >"$out" 2>/dev/null
                iops=$(json_field "$out" total iops)
                mbs=$(json_field "$out" total mb_s)
                section=$([[ $rw == *write* ]] && echo write || echo read)
                p50=$(json_field "$out" "$section" p50)
                p99=$(json_field "$out" "$section" p99)
                cpu=$(json_field "$out" cpu us_per_request)
                label="$rw-$bs-d$depth"
                printf '%-16s %-5s %-10s %5s %10.0f %9.1f %9.1f %9.1f %8.2f\n' "$label" "$dev" "$be" "$round" "$iops" "$mbs" "$p50" "$p99" "$cpu"
                echo "$label $dev $be $iops $mbs $p50 $p99 $cpu" >>"$results"
            done
        done
    done
done

echo
echo "# mean over rounds; ratio = vblk serve / qemu-storage-daemon (IOPS: higher is better for vblk; p99: lower is better)"
printf '%-16s %-5s %11s %11s %7s %9s %9s %7s\n' workload dev qsd-IOPS vblk-IOPS ratio qsd-p99 vblk-p99 ratio
awk '
    { key = $1 " " $2; n[key "|" $3]++; iops[key "|" $3] += $4; p99[key "|" $3] += $7; if (!(key in seen)) { seen[key] = 1; order[++k] = key } }
    END {
        for (i = 1; i <= k; i++) {
            key = order[i]; q = key "|qsd"; v = key "|vblk"
            qi = iops[q] / n[q]; vi = iops[v] / n[v]; qp = p99[q] / n[q]; vp = p99[v] / n[v]
            split(key, parts, " ")
            printf "%-16s %-5s %11.0f %11.0f %7.2f %9.1f %9.1f %7.2f\n", parts[1], parts[2], qi, vi, (qi > 0 ? vi / qi : 0), qp, vp, (qp > 0 ? vp / qp : 0)
        }
    }' "$results"
