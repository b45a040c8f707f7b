#!/usr/bin/env bash
# Repeats the restart test many times: a Linux guest (QEMU, reconnect=1) runs fio
# randwrite + crc32c verify at depth 16 over 2 queues while `vblk serve` is killed
# (SIGKILL by default) and started again on the same socket and image a second later.
# The back-end holds each completion for a while (--debug-hold-completions-ms), so a
# kill lands on requests taken and not yet returned; the next back-end logs how many
# it found in the inflight record and does them again.
#
# One line per run, then a summary. A run passes when fio passes in the guest (no I/O
# error in its kernel log), fio on the host verifies the image, and no back-end
# reports a ring it had to stop. A hang is a guest that does not finish in time.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
RUNS=20
KILLS=8
SIGNAL=KILL
HOLD_MS=40
MIB=64
GAP=2.5
TIMEOUT=600
KEEP=""
PACKED=()

usage() {
    cat <<'EOF'
Usage: bench/restart-kill.sh [--runs N] [--kills N] [--signal KILL|TERM] [--hold-ms N] [--mib N]

  --runs N       runs (default 20)
  --kills N      back-end stops per run, half while fio writes, half while it verifies (default 8)
  --signal S     KILL (default) or TERM (graceful stop)
  --hold-ms N    --debug-hold-completions-ms of the back-end (default 40)
  --mib N        MiB per fio job, two jobs (default 64; at most 80)
  --gap S        seconds of service before each stop (default 2.5)
  --timeout S    seconds the guest may take before the run counts as a hang (default 600)
  --keep-failed D  copy the logs of each failed run into D/run-N
  --packed       the guest's driver runs packed virtqueues (QEMU packed=on)
EOF
}
while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --kills) KILLS=$2; shift 2 ;;
        --signal) SIGNAL=$2; shift 2 ;;
        --hold-ms) HOLD_MS=$2; shift 2 ;;
        --mib) MIB=$2; shift 2 ;;
        --gap) GAP=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --keep-failed) KEEP=$2; shift 2 ;;
        --packed) PACKED=(--packed); shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

"$REPO/scripts/build-guest.sh" >/dev/null
"$REPO/vblk" --help >/dev/null # builds the tool when its sources changed
DLL="$REPO/artifacts/vblk/vblk.dll"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vblk-restart-kill.XXXXXX")
SERVER_PID=""
GUEST_PID=""
cleanup() {
    [[ -z "$SERVER_PID" ]] || kill -9 "$SERVER_PID" 2>/dev/null || true
    [[ -z "$GUEST_PID" ]] || kill "$GUEST_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

start_server() { # log-file
    dotnet "$DLL" serve "$IMAGE" --socket "$SOCKET" --num-queues 2 --debug-hold-completions-ms "$HOLD_MS" \
        --metrics "127.0.0.1:$METRICS_PORT" >"$1" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 300); do
        [[ -S "$SOCKET" ]] && return 0
        sleep 0.05
    done
    echo "back-end did not start" >&2
    return 1
}

# Requests the back-end has taken and not yet returned, from its metrics endpoint: a stop
# is sent only while this is above zero, so every kill lands on requests in flight.
METRICS_PORT=$((20000 + RANDOM % 20000))
in_flight() {
    curl -s --max-time 1 "http://127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null |
        awk '/^vblk_in_flight/ { s += $2 } END { print s + 0 }'
}

passed=0; failed=0; hangs=0; total_kills=0; kills_in_flight=0; short_runs=0
echo "date: $(date -u +%Y-%m-%dT%H:%MZ), runs=$RUNS kills=$KILLS signal=$SIGNAL hold=${HOLD_MS}ms mib=$MIB${PACKED:+ packed}"
for run in $(seq 1 "$RUNS"); do
    IMAGE="$WORK/disk.img"; SOCKET="$WORK/vblk.sock"; CONSOLE="$WORK/console.log"
    rm -f "$IMAGE" "$SOCKET" "$WORK"/server-*.log "$CONSOLE"
    truncate -s 256M "$IMAGE"
    n=0
    start_server "$WORK/server-$n.log"
    "$REPO/scripts/run-guest.sh" --socket "$SOCKET" --jobs fio-restart --vcpus 2 --queues 2 --reconnect --quiet "${PACKED[@]}" \
        --timeout "$TIMEOUT" --log "$CONSOLE" --extra-append "vblk.restart_mib=$MIB" >"$WORK/guest.out" 2>&1 &
    GUEST_PID=$!
    phase=""; since=$(date +%s.%N); w=0; v=0
    while kill -0 "$GUEST_PID" 2>/dev/null; do
        sleep 0.2
        p=$(grep -ao 'VBLK-PHASE [a-z]*' "$CONSOLE" 2>/dev/null | tail -n1 | cut -d' ' -f2 || true)
        if [[ "$p" != "$phase" ]]; then phase=$p; since=$(date +%s.%N); fi
        case $phase in
            write) [[ $w -lt $((KILLS / 2)) ]] || continue ;;
            verify) [[ $v -lt $((KILLS - KILLS / 2)) ]] || continue ;;
            *) continue ;;
        esac
        grep -q 'queue 1: started' "$WORK/server-$n.log" || { since=$(date +%s.%N); continue; }
        awk -v a="$since" -v b="$(date +%s.%N)" -v g="$GAP" 'BEGIN { exit !(b - a >= g) }' || continue
        [[ $(in_flight) -gt 0 ]] || continue
        kill -s "$SIGNAL" "$SERVER_PID"
        wait "$SERVER_PID" 2>/dev/null || true
        [[ $phase == write ]] && w=$((w + 1)) || v=$((v + 1))
        [[ $SIGNAL == TERM ]] || rm -f "$SOCKET"
        sleep 1
        n=$((n + 1))
        start_server "$WORK/server-$n.log"
        since=$(date +%s.%N)
    done
    wait "$GUEST_PID" && guest_rc=0 || guest_rc=$?
    GUEST_PID=""
    kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
    counts=()
    for i in $(seq 1 "$n"); do
        c=$( (grep -ao 'inflight record: [0-9]* request' "$WORK/server-$i.log" || true) | awk '{ s += $3 } END { print s + 0 }')
        counts+=("$c")
        total_kills=$((total_kills + 1))
        [[ $c -eq 0 ]] || kills_in_flight=$((kills_in_flight + 1))
    done
    verdict=$(grep -a '^RESULT fio-restart' "$WORK/guest.out" | cut -d' ' -f3- || echo "no verdict")
    host=ok
    fio --filename="$IMAGE" --ioengine=psync --rw=randwrite --bsrange=4k-64k --size="${MIB}M" \
        --verify=crc32c --verify_fatal=1 --verify_state_save=0 --verify_only --group_reporting \
        --name=vblk-restart-0 --offset=96M --name=vblk-restart-1 --offset=$((96 + MIB))M >"$WORK/host-fio.out" 2>&1 || host=FAIL
    resets=$(cat "$WORK"/server-*.log | grep -ci 'needs reset' || true)
    if grep -q 'timeout' "$WORK/guest.out" && [[ $verdict != PASS* ]]; then hangs=$((hangs + 1)); fi
    [[ $n -ge $KILLS ]] || short_runs=$((short_runs + 1))
    if [[ $verdict == PASS* && $host == ok && $resets == 0 ]]; then passed=$((passed + 1)); r=PASS; else failed=$((failed + 1)); r=FAIL; fi
    if [[ $r == FAIL && -n $KEEP ]]; then
        mkdir -p "$KEEP/run-$run" && cp "$WORK"/*.log "$WORK"/*.out "$WORK"/console.log* "$KEEP/run-$run/" 2>/dev/null || true
    fi
    echo "run $run: $r guest=[$verdict] host-verify=$host kills=$n (write $w, verify $v) in-flight-per-kill=[${counts[*]}] ring-resets=$resets"
done
echo "summary: $passed passed, $failed failed, $hangs hangs; $kills_in_flight of $total_kills kills found requests in flight; $short_runs runs ended before $KILLS kills"
[[ $failed -eq 0 ]]
