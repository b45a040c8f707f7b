#!/usr/bin/env bash
# Side by side: `vblk bench` (our vhost-user front-end and virtio-blk driver) against two
# vhost-user-blk back-ends, qemu-storage-daemon and `vblk serve`, each exporting a null device
# and a raw image held in the page cache. Runs alternate between the back-ends so drift in the
# machine's load hits both alike. Prints every run, then a summary with vblk/qsd ratios:
# IOPS, p99 latency and the back-end's CPU seconds per million requests (from /proc/PID/stat),
# each the median over the rounds.
#
#   bench/frontend-bench.sh                 # 5 s per run, 3 rounds
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
is printed, then medians over the rounds and vblk/qsd ratios, with each back-end's CPU time
(user + system, /proc/PID/stat) per million requests. The CPU is counted over the whole bench
run, ramp included, and divided by the requests measured scaled by (RUNTIME+RAMP)/RUNTIME.

Settings come from the environment:
  RUNTIME=S      seconds measured per run (default 5)
  RAMP=S         warm-up seconds per run (default 1)
  ROUNDS=N       rounds (default 3)
  IMAGE_SIZE=SZ  raw image size (default 1G)
  DEVICES=LIST   devices, from: null file cold (default: all three as root, else null file)
                 cold = the raw image with the page cache dropped before every run
                 (echo 1 > /proc/sys/vm/drop_caches), so reads go to the disk until
                 they warm it again
                 Cache modes, each side with the matching settings and aio=io_uring for qsd
                 (the same two images; qsd's extra exports open them with locking=off):
                 writeback = vblk serve --cache writeback, qsd cache.direct=off
                 direct    = vblk serve --cache none,      qsd cache.direct=on
                 unsafe    = vblk serve --cache unsafe,    qsd cache.direct=off,cache.no-flush=on
                 e.g. DEVICES="writeback direct unsafe"
  SERVE_ARGS=..  extra arguments for both `vblk serve` back-ends (e.g. "--poll-us 50")
  BENCH_ARGS=..  extra arguments for every `vblk bench` run (e.g. "--poll-us 50")
  BASE_VBLK=EXE  a second vblk executable (another build, e.g. of an earlier commit) served as
                 "base" beside this tree's vblk and qsd in every round, with the same arguments
                 (devices null, file and cold only);
                 the summary then has a second table, base against qsd. `vblk bench` is this
                 tree's in every run.
                 Several builds: BASE_VBLK="NAME=EXE NAME=EXE ...", each served and summed up
                 the same way under its NAME (letters, digits, '-'; not qsd or vblk).
USAGE
}
case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    "") ;;
    *) echo "frontend-bench: unknown argument: $1 (see --help)" >&2; exit 2 ;;
esac

RUNTIME=${RUNTIME:-5}
RAMP=${RAMP:-1}
ROUNDS=${ROUNDS:-3}
SERVE_ARGS=${SERVE_ARGS:-}
BENCH_ARGS=${BENCH_ARGS:-}
IMAGE_SIZE=${IMAGE_SIZE:-1G}
if [[ -w /proc/sys/vm/drop_caches ]]; then DEVICES=${DEVICES:-"null file cold"}; else DEVICES=${DEVICES:-"null file"}; fi
for dev in $DEVICES; do
    case "$dev" in
        null|file|writeback|direct|unsafe) ;;
        cold) [[ -w /proc/sys/vm/drop_caches ]] || { echo "frontend-bench: cold needs root (drop_caches)" >&2; exit 2; } ;;
        *) echo "frontend-bench: unknown device $dev (null, file, cold, writeback, direct, unsafe)" >&2; exit 2 ;;
    esac
done

# Builds served beside this tree's: name -> executable.
declare -A base_exe
base_names=""
set -f
for entry in ${BASE_VBLK:-}; do
    if [[ $entry == *=* ]]; then name=${entry%%=*} exe=${entry#*=}; else name=base exe=$entry; fi
    [[ $name =~ ^[A-Za-z0-9-]+$ && $name != qsd && $name != vblk ]] || { echo "frontend-bench: BASE_VBLK name '$name' is not usable (letters, digits, '-'; not qsd or vblk)" >&2; exit 2; }
    [[ -z "${base_exe[$name]:-}" ]] || { echo "frontend-bench: BASE_VBLK names $name twice" >&2; exit 2; }
    [[ -x "$exe" ]] || { echo "frontend-bench: BASE_VBLK $exe is not an executable" >&2; exit 2; }
    base_exe[$name]=$exe
    base_names="$base_names $name"
done
set +f

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [[ -x ./vblk ]]; then
    vblk=(./vblk)
    # Builds it now when its sources changed: the back-ends below must not start with a build
    # that outlasts the wait for their sockets.
    ./vblk --help >/dev/null
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
declare -A bepid # back-end socket name -> its process
clk_tck=$(getconf CLK_TCK)
cpu_ticks() { # pid: user + system clock ticks so far (fields 14 and 15 after the command name)
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}
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

wait_file() { # test path: -S for vblk serve's socket (it appears once the server listens), -s for qsd's pid file
    for _ in $(seq 1 200); do
        test "$1" "$2" && return 0
        sleep 0.05
    done
    echo "frontend-bench: nothing at $2" >&2
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
    # qemu-storage-daemon writes its pid file once the export listens (its socket file exists
    # a moment before that).
    "$qsd" "$@" --export "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path=$work/$name.sock,writable=on" \
        --pidfile "$work/$name.pid" >"$work/$name.log" 2>&1 &
    pids+=($!)
    bepid[$name]=$!
    wait_file -s "$work/$name.pid"
}

start_vblk() { # name serve-args...
    local name=$1 exe=("${vblk[@]}")
    shift
    [[ -n "${base_exe[${name%-*}]:-}" ]] && exe=("${base_exe[${name%-*}]}")
    # shellcheck disable=SC2086 # SERVE_ARGS is split on purpose
    "${exe[@]}" serve "$@" $SERVE_ARGS --socket "$work/$name.sock" >"$work/$name.log" 2>&1 &
    pids+=($!)
    bepid[$name]=$!
    wait_file -S "$work/$name.sock"
}

start_qsd qsd-null --blockdev "driver=null-co,node-name=disk0,size=$null_bytes,read-zeroes=on"
start_qsd qsd-file --blockdev "driver=file,node-name=file0,filename=$image" --blockdev "driver=raw,node-name=disk0,file=file0"
start_vblk vblk-null --backend null --size "$null_bytes"
start_vblk vblk-file "$work/disk2.raw"
backends="qsd vblk"
for name in $base_names; do
    # An image of its own, made like the others (vblk serve locks its image).
    cp "$image" "$work/disk-$name.raw"
    start_vblk "$name-null" --backend null --size "$null_bytes"
    start_vblk "$name-file" "$work/disk-$name.raw"
    backends="$backends $name"
done
want() { [[ " $DEVICES " == *" $1 "* ]]; }
file_node() { # cache options of qsd's file node
    echo "driver=file,node-name=file0,filename=$image,aio=io_uring,locking=off,$1"
}
if want writeback; then
    start_qsd qsd-writeback --blockdev "$(file_node cache.direct=off)" --blockdev "driver=raw,node-name=disk0,file=file0"
    start_vblk vblk-writeback "$work/disk2.raw" --cache writeback
fi
if want direct; then
    start_qsd qsd-direct --blockdev "$(file_node cache.direct=on)" --blockdev "driver=raw,node-name=disk0,file=file0"
    start_vblk vblk-direct "$work/disk2.raw" --cache none
fi
if want unsafe; then
    start_qsd qsd-unsafe --blockdev "$(file_node cache.direct=off,cache.no-flush=on)" --blockdev "driver=raw,node-name=disk0,file=file0,cache.no-flush=on"
    start_vblk vblk-unsafe "$work/disk2.raw" --cache unsafe
fi

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
echo "# vblk serve extra arguments: '${SERVE_ARGS}'; vblk bench extra arguments: '${BENCH_ARGS}'"
for name in $base_names; do echo "# $name: ${base_exe[$name]}"; done
echo "# images on $(findmnt -no FSTYPE -T "$work") ($(findmnt -no SOURCE -T "$work")); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
printf '%-16s %-5s %-10s %5s %10s %9s %9s %9s %8s %9s\n' workload dev backend round IOPS MB/s p50us p99us fe-cpu-us be-cpu-s/M
for w in "${workloads[@]}"; do
    read -r rw bs depth <<<"$w"
    for dev in $DEVICES; do
        for round in $(seq 1 "$ROUNDS"); do
            # Alternate which back-end goes first.
            if ((round % 2)); then order=$backends; else order=$(echo "$backends" | tr ' ' '\n' | tac | tr '\n' ' '); fi
            for be in $order; do
                [[ -n "${base_exe[$be]:-}" && $dev != null && $dev != file && $dev != cold ]] && continue # builds beside serve these three only
                out=$work/run.json
                sock=$work/$be-$dev.sock
                if [[ $dev == file || $dev == writeback || $dev == unsafe ]]; then
                    cat "$image" "$work/disk2.raw" >/dev/null # warm again after a cold run
                    for name in $base_names; do cat "$work/disk-$name.raw" >/dev/null; done
                fi
                if [[ $dev == cold ]]; then
                    sock=$work/$be-file.sock
                    sync
                    echo 1 >/proc/sys/vm/drop_caches
                fi
                pid=${bepid[$(basename "$sock" .sock)]}
                ticks0=$(cpu_ticks "$pid")
                # shellcheck disable=SC2086 # BENCH_ARGS is split on purpose
                "${vblk[@]}" bench --socket "$sock" --rw "$rw" --bs "$bs" --iodepth "$depth" \
                    --runtime "$RUNTIME" --ramp "$RAMP" $BENCH_ARGS --json >"$out" 2>/dev/null
                ticks1=$(cpu_ticks "$pid")
                iops=$(json_field "$out" total iops)
                mbs=$(json_field "$out" total mb_s)
                section=$([[ $rw == *write* ]] && echo write || echo read)
                p50=$(json_field "$out" "$section" p50)
                p99=$(json_field "$out" "$section" p99)
                cpu=$(json_field "$out" cpu us_per_request)
                ops=$(json_field "$out" total ops)
                becpu=$(awk -v t=$((ticks1 - ticks0)) -v hz="$clk_tck" -v ops="$ops" -v run="$RUNTIME" -v ramp="$RAMP" \
                    'BEGIN { n = ops * (run + ramp) / run; printf "%.2f", (n > 0 ? t / hz / n * 1e6 : 0) }')
                label="$rw-$bs-d$depth"
                printf '%-16s %-5s %-10s %5s %10.0f %9.1f %9.1f %9.1f %8.2f %9.2f\n' "$label" "$dev" "$be" "$round" "$iops" "$mbs" "$p50" "$p99" "$cpu" "$becpu"
                echo "$label $dev $be $iops $mbs $p50 $p99 $cpu $becpu" >>"$results"
            done
        done
    done
done

summary() { # other: vblk or a build beside it, against qsd
    local other=$1
    echo
    echo "# median over rounds; ratio = $other / qemu-storage-daemon (IOPS: higher is better for $other; p99 and back-end CPU per request: lower is better)"
    printf '%-16s %-5s %11s %11s %7s %9s %9s %7s %9s %9s %7s\n' workload dev qsd-IOPS "$other-IOPS" ratio qsd-p99 "$other-p99" ratio qsd-cpu/M "$other-cpu/M" ratio
    while read -r label dev; do
        row=("$label" "$dev")
        for field in 4 7 9; do
            q=$(median $(awk -v l="$label" -v d="$dev" -v f="$field" '$1 == l && $2 == d && $3 == "qsd" { print $f }' "$results"))
            v=$(median $(awk -v l="$label" -v d="$dev" -v f="$field" -v o="$other" '$1 == l && $2 == d && $3 == o { print $f }' "$results"))
            row+=("$q" "$v" "$(awk -v q="$q" -v v="$v" 'BEGIN { printf "%.2f", (q > 0 ? v / q : 0) }')")
        done
        printf '%-16s %-5s %11.0f %11.0f %7s %9.1f %9.1f %7s %9.2f %9.2f %7s\n' "${row[@]}"
    done < <(awk '!seen[$1 " " $2]++ { print $1, $2 }' "$results")
}
median() { # values...: the median
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}
summary vblk
for name in $base_names; do summary "$name"; done
exit 0
