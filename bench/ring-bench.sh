#!/usr/bin/env bash
# Two threads, one ring, both polling: our split and packed virtqueues (the real
# queue types, bench/VirtioSharp.Benchmarks `ring`) beside Linux's
# tools/virtio/ringtest models, built from Debian's linux-source-6.1 package into a
# temporary folder.  Rounds alternate the order; the table shows medians.
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

ROUNDS=3
BUFFERS=10000000
WARMUP=3000000
BATCHES="1 32"
RING_SIZE=256
DRIVER_CPU=0
DEVICE_CPU=1
OURS="split packed split+decide packed+decide"
MODELS="virtio_ring_0_9 virtio_ring_inorder ring"
OUT=""
RT_PRIORITY=""
SOURCE_TARBALL=/usr/src/linux-source-6.1.tar.xz

usage() {
    cat <<EOF
Usage: bench/ring-bench.sh [options]

Passes a fixed number of one-descriptor buffers through one ring, the driver
half on one CPU and the device half on another, both polling (no notifications,
no interrupts), and prints buffers per second:
  split, packed         VirtioSharp's SplitDriverQueue/SplitDeviceQueue and
                        PackedDriverQueue/PackedDeviceQueue; neither half decides
                        on a notification (PublishForPoller, PublishUsedForPoller),
                        as ringtest's polling mode never kicks nor calls
  split+decide, packed+decide
                        the same, with every Publish and PublishUsed deciding
                        (the full barrier, then a read of the other side's event
                        suppression state: 2.7.13.4, 2.7.7.2, 2.8.21.3.1), as a
                        half that does not know its peer polls
  virtio_ring_0_9       ringtest's split ring (Linux's design)
  virtio_ring_inorder   ringtest's split ring with in-order completion
  ring                  ringtest's descriptor ring with a flag per slot (the ceiling)
ringtest comes from $SOURCE_TARBALL (Debian package linux-source-6.1):
only tools/virtio/ringtest is unpacked, into a temporary folder, and built there.

Batch: our driver adds up to N buffers before one Publish and the device takes up
to N chains before one PublishUsed.  ringtest publishes every buffer; its --batch
only spaces kicks, which polling never sends, so its rows for both batches
measure the same thing (they are run anyway, as given).

  --rounds N        rounds; each runs every row once, the order reversed in
                    every other round (default $ROUNDS)
  --buffers N       buffers per run (default $BUFFERS)
  --warmup N        buffers our runs pass before timing, for the JIT (default $WARMUP)
  --batches LIST    batch sizes (default "$BATCHES")
  --ring-size N     queue size (default $RING_SIZE)
  --driver-cpu N    CPU of the driver (ringtest: guest) thread (default $DRIVER_CPU)
  --device-cpu N    CPU of the device (ringtest: host) thread (default $DEVICE_CPU)
  --ours LIST       our rows (default "$OURS"; "" for none)
  --models LIST     ringtest models (default "$MODELS"; "" for none)
  --rt-priority N    run every row under SCHED_FIFO priority N (chrt -f N; needs
                    root or CAP_SYS_NICE): two polling threads pinned to the only
                    two CPUs are otherwise preempted by any other thread, the
                    runtime's own included, and while one is off its CPU the other
                    spins; rows measure the scheduler then, not the ring.  Every
                    row, ringtest's too, runs so (default: normal scheduling)
  --out FILE        also write the report to FILE
  -h, --help        this text
EOF
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --buffers) BUFFERS=$2; shift 2 ;;
        --batches) BATCHES=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --ring-size) RING_SIZE=$2; shift 2 ;;
        --driver-cpu) DRIVER_CPU=$2; shift 2 ;;
        --device-cpu) DEVICE_CPU=$2; shift 2 ;;
        --ours) OURS=$2; shift 2 ;;
        --models) MODELS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --rt-priority) RT_PRIORITY=$2; shift 2 ;;
        *) echo "ring-bench: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "ring-bench: --rounds must be a positive number" >&2; exit 2; }
[[ "$BUFFERS" =~ ^[1-9][0-9]*$ && ${#BUFFERS} -le 10 && $BUFFERS -lt 2147483647 ]] \
    || { echo "ring-bench: --buffers must be a positive number below 2^31 (ringtest's --run-cycles is an int)" >&2; exit 2; }

RT=()
if [[ -n "$RT_PRIORITY" ]]; then
    [[ "$RT_PRIORITY" =~ ^[1-9][0-9]?$ ]] || { echo "ring-bench: --rt-priority must be 1-99" >&2; exit 2; }
    command -v chrt >/dev/null || { echo "ring-bench: chrt is needed for --rt-priority: apt-get install -y util-linux" >&2; exit 1; }
    chrt -f "$RT_PRIORITY" true 2>/dev/null || { echo "ring-bench: chrt -f $RT_PRIORITY was refused (root or CAP_SYS_NICE needed)" >&2; exit 1; }
    RT=(chrt -f "$RT_PRIORITY")
fi

WORK=$(mktemp -d /tmp/ring-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

if [[ -n "$MODELS" ]]; then
    [[ -f "$SOURCE_TARBALL" ]] || { echo "ring-bench: $SOURCE_TARBALL is missing: apt-get install -y linux-source-6.1" >&2; exit 1; }
    command -v cc >/dev/null && command -v make >/dev/null || { echo "ring-bench: cc and make are needed: apt-get install -y gcc make" >&2; exit 1; }
    echo "ring-bench: unpacking tools/virtio/ringtest from $SOURCE_TARBALL ..." >&2
    top=$(basename "$SOURCE_TARBALL" .tar.xz)
    tar -xJf "$SOURCE_TARBALL" -C "$WORK" "$top/tools/virtio/ringtest"
    RINGTEST="$WORK/$top/tools/virtio/ringtest"
    # shellcheck disable=SC2086
    make -s -C "$RINGTEST" $MODELS >"$WORK/make.log" 2>&1 || { cat "$WORK/make.log" >&2; echo "ring-bench: building ringtest failed" >&2; exit 1; }
fi

if [[ -n "$OURS" ]]; then
    echo "ring-bench: building bench/VirtioSharp.Benchmarks ..." >&2
    dotnet build "$REPO_ROOT/bench/VirtioSharp.Benchmarks/VirtioSharp.Benchmarks.csproj" -c Release --nologo -v q -clp:NoSummary \
        -o "$WORK/bench" >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log" >&2; echo "ring-bench: build failed" >&2; exit 1; }
fi

# One run of one row; prints buffers per second.
run_ours() { # row batch
    local decide=()
    [[ $1 != *+decide ]] || decide=(--decide)
    "${RT[@]}" dotnet "$WORK/bench/VirtioSharp.Benchmarks.dll" ring --format "${1%%+*}" "${decide[@]}" --batch "$2" --buffers "$BUFFERS" --warmup "$WARMUP" \
        --ring-size "$RING_SIZE" --driver-cpu "$DRIVER_CPU" --device-cpu "$DEVICE_CPU" \
        | sed -n 's/.*buffers_per_second=\([0-9]*\).*/\1/p'
}
run_model() { # model batch
    local t0 t1
    t0=$EPOCHREALTIME
    "${RT[@]}" "$RINGTEST/$1" --run-cycles "$BUFFERS" --batch "$2" --ring-size "$RING_SIZE" \
        --guest-affinity "$DRIVER_CPU" --host-affinity "$DEVICE_CPU"
    t1=$EPOCHREALTIME
    awk -v n="$BUFFERS" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f\n", n / (b - a) }'
}

ROWS=()
for f in $OURS; do ROWS+=("ours:$f"); done
for m in $MODELS; do ROWS+=("ringtest:$m"); done

report() { if [[ -n "$OUT" ]]; then echo "$1" | tee -a "$OUT"; else echo "$1"; fi; }
[[ -z "$OUT" ]] || : >"$OUT"
report "# ring-bench $(date -u +%Y-%m-%dT%H:%MZ)"
report "# Linux $(uname -r), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
report "# .NET $(dotnet --version 2>/dev/null || echo '?'), $(cc --version 2>/dev/null | head -1)"
report "# $BUFFERS buffers per run, ring size $RING_SIZE, driver on CPU $DRIVER_CPU, device on CPU $DEVICE_CPU, $ROUNDS rounds"
report "# scheduling: $([[ -n "$RT_PRIORITY" ]] && echo "SCHED_FIFO priority $RT_PRIORITY (chrt -f)" || echo "normal (SCHED_OTHER)")"
report "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

declare -A RESULTS
for round in $(seq 1 "$ROUNDS"); do
    order=("${ROWS[@]}")
    if (( round % 2 == 0 )); then
        order=()
        for (( i=${#ROWS[@]}-1; i>=0; i-- )); do order+=("${ROWS[$i]}"); done
    fi
    for batch in $BATCHES; do
        for row in "${order[@]}"; do
            kind=${row%%:*}; name=${row#*:}
            if [[ $kind == ours ]]; then bps=$(run_ours "$name" "$batch"); else bps=$(run_model "$name" "$batch"); fi
            [[ -n "$bps" ]] || { echo "ring-bench: $name batch $batch gave no result" >&2; exit 1; }
            RESULTS["$row/$batch"]+="$bps "
            echo "ring-bench: round $round $name batch $batch: $bps buffers/s (load $(cut -d' ' -f1 /proc/loadavg))" >&2
        done
    done
done

report "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
report "# million buffers per second: median of $ROUNDS runs [min-max]"
header=$(printf '%-30s' "row")
for batch in $BATCHES; do header+=$(printf ' %22s' "batch $batch"); done
report "$header"
for row in "${ROWS[@]}"; do
    kind=${row%%:*}; name=${row#*:}
    label=$([[ $kind == ours ]] && echo "VirtioSharp $name" || echo "ringtest $name")
    line=$(printf '%-30s' "$label")
    for batch in $BATCHES; do
        cell=$(echo "${RESULTS["$row/$batch"]}" | tr ' ' '\n' | grep . | sort -n | awk '
            { v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
              printf "%.2f [%.2f-%.2f]", m / 1e6, v[1] / 1e6, v[NR] / 1e6 }')
        line+=$(printf ' %22s' "$cell")
    done
    report "$line"
done
