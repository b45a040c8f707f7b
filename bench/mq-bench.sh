#!/usr/bin/env bash
# Multiqueue scaling of vblk serve on the null device: vblk bench at depth 32 per queue with
# 1, 2 and 4 queues, with the threads left to the scheduler and with each queue's back-end
# worker and front-end thread pinned to the same CPU (--queue-cpus on both sides).
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bench/mq-bench.sh [--rounds N] [--runtime S] [--ramp S] [--queues "1 2 4"] [--iodepth D] [--vblk CMD]

Starts two `vblk serve --backend null --size 1G --num-queues 4` back-ends, one unpinned and one
with --queue-cpus 0-(CPUs-1), and runs `vblk bench --completions inline --iodepth D --queues N`
against each for every N, rounds alternating which configuration goes first. The pinned runs
pin the bench's queue threads to the same CPU list, so queue i's front-end and back-end threads
share CPU i mod CPUs. Prints IOPS and p50 of every run and the median IOPS per row.

  --rounds N      rounds (default 3)
  --runtime S     seconds measured per run (default 3)
  --ramp S        warm-up seconds per run (default 0.5)
  --queues LIST   queue counts (default "1 2 4")
  --iodepth D     requests in flight per queue (default 32)
  --vblk CMD      how to run vblk (default ./vblk from the repository root)
  -h, --help      show this help
EOF
}

ROUNDS=3 RUNTIME=3 RAMP=0.5 QUEUES="1 2 4" DEPTH=32
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VBLK="$REPO_ROOT/vblk"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --runtime) RUNTIME=$2; shift 2 ;;
        --ramp) RAMP=$2; shift 2 ;;
        --queues) QUEUES=$2; shift 2 ;;
        --iodepth) DEPTH=$2; shift 2 ;;
        --vblk) VBLK=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "mq-bench: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "mq-bench: --rounds must be a positive integer" >&2; exit 2; }

CPUS=$(nproc)
CPU_LIST="0-$((CPUS - 1))"
WORK=$(mktemp -d /tmp/mq-bench.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck disable=SC2086  # VBLK may be a command with arguments
$VBLK --help >/dev/null # builds ./vblk once when its sources changed, not in two back-ends at once
# shellcheck disable=SC2086
$VBLK serve --backend null --size 1G --socket "$WORK/free.sock" --num-queues 4 >"$WORK/free.log" 2>&1 &
PIDS+=($!)
# shellcheck disable=SC2086
$VBLK serve --backend null --size 1G --socket "$WORK/pinned.sock" --num-queues 4 --queue-cpus "$CPU_LIST" >"$WORK/pinned.log" 2>&1 &
PIDS+=($!)
for s in free pinned; do
    for _ in $(seq 1 600); do [[ -S "$WORK/$s.sock" ]] && break; sleep 0.1; done
    [[ -S "$WORK/$s.sock" ]] || { cat "$WORK/$s.log" >&2; echo "mq-bench: vblk serve ($s) did not start" >&2; exit 1; }
done

echo "# mq-bench $(date -u +%Y-%m-%dT%H:%MZ): null device, depth $DEPTH per queue, ${RUNTIME}s (+${RAMP}s ramp), $ROUNDS rounds, $CPUS CPUs, load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-7s %-6s %-6s %10s %8s\n' round pinned queues IOPS p50-us
RESULTS="$WORK/results"
: >"$RESULTS"
for round in $(seq 1 "$ROUNDS"); do
    order=(free pinned)
    ((round % 2)) || order=(pinned free)
    for n in $QUEUES; do
        for s in "${order[@]}"; do
            pin=()
            [[ $s == free ]] || pin=(--queue-cpus "$CPU_LIST")
            # shellcheck disable=SC2086
            json=$($VBLK bench --socket "$WORK/$s.sock" --iodepth "$DEPTH" --queues "$n" --completions inline \
                --runtime "$RUNTIME" --ramp "$RAMP" --json "${pin[@]}" 2>/dev/null)
            read -r iops p50 < <(python3 -c 'import json,sys; r=json.load(sys.stdin)["read"]; print(int(r["iops"]), r["lat_us"]["p50"])' <<<"$json")
            printf '%-7s %-6s %-6s %10s %8s\n' "$round" "$s" "$n" "$iops" "$p50"
            printf '%s %s %s\n' "$s" "$n" "$iops" >>"$RESULTS"
        done
    done
done
echo
echo "# median IOPS"
printf '%-6s %-6s %10s\n' pinned queues IOPS
for s in free pinned; do
    for n in $QUEUES; do
        med=$(awk -v s="$s" -v n="$n" '$1 == s && $2 == n {print $3}' "$RESULTS" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}')
        printf '%-6s %-6s %10s\n' "$s" "$n" "$med"
    done
done
