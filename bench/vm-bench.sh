#!/usr/bin/env bash
# End-to-end benchmark: the test guest (QEMU, TCG) runs fio against a
# vhost-user-blk back-end; compares qemu-storage-daemon with a second back-end.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
RUN_GUEST="$REPO_ROOT/scripts/run-guest.sh"

OURS=""
OURS_NULL=""
DEVICES="file,null"
JOBS="fio-randread-qd1,fio-randread-qd32,fio-randwrite-qd32,fio-seqread-qd8"
RUNTIME=10
SIZE_MIB=1024
ROUNDS=1
OUT=""
WORKDIR=""
KEEP=0
SPIN_IDLE=0
PAIRED=0
PACKED=0
SLICE=0.2
SPINNERS=()
VCPUS=1
QUEUES=1
MEM=512
CACHE=""
POLL_US=""

usage() {
    cat <<'EOF'
Usage: bench/vm-bench.sh [--ours TEMPLATE] [--ours-null TEMPLATE] [options]

Boots the test guest (scripts/run-guest.sh: QEMU under TCG, 1 vCPU, 1 queue)
against vhost-user-blk back-ends and runs the guest's fio perf jobs:
  fio-randread-qd1    4 KiB random read, queue depth 1
  fio-randread-qd32   4 KiB random read, queue depth 32
  fio-randwrite-qd32  4 KiB random write, queue depth 32
  fio-seqread-qd8     128 KiB sequential read, queue depth 8
on two devices:
  file   a raw image, written out in full and read once beforehand so it is
         allocated and in the host page cache
  null   a device that stores nothing and reads zeroes (qemu-storage-daemon:
         null-co with read-zeroes=on, so both back-ends fill read buffers)

The reference back-end is qemu-storage-daemon (qsd).  With --ours, the
second back-end runs too (with --packed, --ours runs twice instead: split and
packed virtqueues); the back-ends alternate device by device (and round
by round when --rounds > 1, qsd first in odd rounds, ours first in even ones).

  --ours TEMPLATE       command line of the second back-end, run with bash from
                        the repo root.  Placeholders: {image} {socket} {size}
                        (bytes) {queues}.  Example:
                        --ours "./vblk serve {image} --socket {socket} --num-queues {queues}"
                        Cache-mode and polling variants, paired with qsd like
                        any other: add --cache MODE and/or --poll-us N (below).
  --packed              compare ring formats instead of back-ends: the rows
                        "split" and "packed" both run --ours (which must offer
                        VIRTIO_F_RING_PACKED, as vblk serve does), the guest's
                        disk with packed=on (vhost-user-blk-pci) for "packed";
                        qemu-storage-daemon does not run (it has no packed
                        rings).  The back-end's log must show the ring format
                        each row asked for, or the row fails.  Example:
                        --packed --ours "./vblk serve {image} --socket {socket} --num-queues {queues}"
  --ours-null TEMPLATE  the same for the null device; default: --ours with
                        {image} replaced by "--backend null --size {size}"
  --cache MODE          writeback, none or unsafe: the file device's cache mode
                        on both back-ends, QEMU's meaning.  ours gets
                        "--cache MODE" appended (file device only); qsd's file
                        node gets aio=io_uring and
                          writeback  cache.direct=off
                          none       cache.direct=on (O_DIRECT; the work
                                     directory must not be on tmpfs/ramfs)
                          unsafe     cache.direct=off,cache.no-flush=on
                        Without --cache, qsd runs its defaults (cache.direct=off,
                        aio=threads) and ours runs its template as given.
  --poll-us N           ours polls its rings for up to N us after a drain
                        ("--poll-us N" appended on both devices; 0 = sleep at
                        once).  qsd polls with its own defaults (iothread
                        poll-max-ns) either way.
  --devices LIST        file,null (default both)
  --jobs LIST           guest perf jobs (default: all four above)
  --runtime S           seconds per fio job (default 10)
  --size-mib N          device size and fio region in MiB (default 1024)
  --rounds N            repeat everything N times; the table shows means
  --vcpus N / --queues N / --mem MiB   guest shape (default 1 / 1 / 512)
  --out FILE            also write the table to FILE
  --workdir DIR         image, sockets, logs (default: new dir under .cache/)
  --spin-idle           keep every host CPU from halting while it runs: one
                        busy loop per CPU at SCHED_IDLE priority (chrt -i 0),
                        which any other task preempts at once.  See below.
  --paired              run both back-ends at once, each with its own guest,
                        and let one guest run at a time: every 0.2 s the
                        running QEMU is stopped (SIGSTOP) and the other one
                        resumed.  Both back-ends then meet the host in the same
                        state, slice by slice, where one-after-the-other runs
                        meet it minutes apart.  Guest time runs on while a
                        guest is stopped, so IOPS and MB/s are about half of a
                        run alone; CPU per request is unaffected.
  --keep                keep the work directory
  -h, --help            show this help

Columns: IOPS and MB/s (10^6 bytes/s) as fio in the guest reports them;
CPU s/Mreq = back-end CPU seconds per million requests; switch/req = context
switches of the back-end's threads (voluntary + involuntary, from
/proc/PID/task/*/status) per request, about one per wake-up; CPU us/switch =
back-end CPU time per context switch, the cost of one wake-up and the work
done in it.

How the CPU is measured: the guest's fio runs each perf job with
exec_prerun/exec_postrun hooks that print VBLK-IO-START <job> and
VBLK-IO-STOP <job> on the serial console.  This script follows the console log
as QEMU writes it and, on each marker, reads utime+stime from /proc/PID/stat
of the back-end process and of all its descendants (a process's stat covers
all of its threads).  CPU s/Mreq = (CPU at STOP - CPU at START) / requests
fio completed in that job * 10^6.  The window is fio's I/O phase plus the few
milliseconds of hook and console latency; a back-end that polls while idle is
charged for that too.  The resolution is one clock tick (usually 10 ms).

Why --spin-idle: on a virtual machine whose idle vCPUs halt and exit to the
hypervisor, the time taken to resume a halted vCPU can be charged to the task
that runs on it once it resumes.  A back-end that sleeps between kicks then pays for
the host's wake-from-halt on every kick, the longer the sleep the more
(bench/wakeup-cost.sh measures it), and that cost can hide its own.  With
--spin-idle no CPU halts, so the CPU columns show what the back-ends do.  The
spinners are not descendants of the back-end and are not counted.

Note: under TCG the guest, not the back-end, is the bottleneck, so IOPS and
MB/s mostly measure the emulated guest; CPU s/Mreq is the number that
compares back-ends.  Exit status 0 only if every run succeeded.
EOF
}

log() { printf '[vm-bench] %s\n' "$*" >&2; }
die() { printf '[vm-bench] ERROR: %s\n' "$*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --ours|--ours-null|--devices|--jobs|--runtime|--size-mib|--rounds|--out|--workdir|--vcpus|--queues|--mem|--cache|--poll-us)
            [[ $# -ge 2 ]] || die "$1 needs a value"
            case "$1" in
                --ours) OURS=$2 ;;
                --ours-null) OURS_NULL=$2 ;;
                --devices) DEVICES=$2 ;;
                --jobs) JOBS=$2 ;;
                --runtime) RUNTIME=$2 ;;
                --size-mib) SIZE_MIB=$2 ;;
                --rounds) ROUNDS=$2 ;;
                --out) OUT=$2 ;;
                --workdir) WORKDIR=$2 ;;
                --vcpus) VCPUS=$2 ;;
                --queues) QUEUES=$2 ;;
                --mem) MEM=$2 ;;
                --cache) CACHE=$2 ;;
                --poll-us) POLL_US=$2 ;;
            esac
            shift 2 ;;
        --keep) KEEP=1; shift ;;
        --spin-idle) SPIN_IDLE=1; shift ;;
        --paired) PAIRED=1; shift ;;
        --packed) PACKED=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

for v in RUNTIME SIZE_MIB ROUNDS VCPUS QUEUES MEM; do
    [[ ${!v} =~ ^[0-9]+$ && ${!v} -gt 0 ]] || die "${v} must be a positive integer"
done
IFS=',' read -r -a DEVICE_LIST <<<"$DEVICES"
for d in "${DEVICE_LIST[@]}"; do
    [[ $d == file || $d == null ]] || die "unknown device '$d' (file or null)"
done
if [[ -n "$OURS" && -z "$OURS_NULL" ]]; then
    OURS_NULL=${OURS//\{image\}/--backend null --size \{size\}}
fi
[[ -z "$OURS_NULL" || -n "$OURS" ]] || die "--ours-null needs --ours"
[[ $PAIRED -eq 0 || -n "$OURS" ]] || die "--paired needs --ours"
case "$CACHE" in
    ""|writeback|none|unsafe) ;;
    *) die "unknown cache mode '$CACHE' (writeback, none or unsafe)" ;;
esac
[[ -z "$POLL_US" || $POLL_US =~ ^[0-9]+$ ]] || die "--poll-us must be a whole number of microseconds"
[[ -z "$POLL_US" || -n "$OURS" ]] || die "--poll-us needs --ours (it applies to ours only)"
if [[ -n "$CACHE" && -n "$OURS" ]]; then
    OURS="$OURS --cache $CACHE" # the file device only; OURS_NULL was made from the template before
fi
if [[ -n "$POLL_US" ]]; then
    OURS="$OURS --poll-us $POLL_US"
    OURS_NULL="$OURS_NULL --poll-us $POLL_US"
fi
[[ $PACKED -eq 0 || -n "$OURS" ]] || die "--packed needs --ours (qemu-storage-daemon has no packed rings)"
# The rows: the reference first, then the one compared with it.
if ((PACKED)); then
    BACKENDS=(split packed)
elif [[ -n "$OURS" ]]; then
    BACKENDS=(qsd ours)
else
    BACKENDS=(qsd)
fi

"$REPO_ROOT/scripts/build-guest.sh" >&2
((PACKED)) || command -v qemu-storage-daemon >/dev/null || die "qemu-storage-daemon not found"
CLK_TCK=$(getconf CLK_TCK)

if [[ -z "$WORKDIR" ]]; then
    mkdir -p "$REPO_ROOT/.cache"
    WORKDIR=$(mktemp -d "$REPO_ROOT/.cache/vm-bench.XXXXXX")
else
    mkdir -p "$WORKDIR"
fi
WORKDIR=$(cd "$WORKDIR" && pwd)
if [[ $CACHE == none ]]; then
    fstype=$(stat -f -c %T "$WORKDIR")
    [[ $fstype != tmpfs && $fstype != ramfs ]] || die "--cache none: $WORKDIR is on $fstype; give --workdir on a disk file system"
fi
IMG="$WORKDIR/bench.img"
SOCK=""
SIZE_BYTES=$((SIZE_MIB * 1048576))
RESULTS="$WORKDIR/results.tsv"
: >"$RESULTS"

BACKEND_PID=""
declare -A STARTED=() # back-end pid -> its socket, until stopped
stop_backend() { # pid
    local pid=$1
    [[ -n "$pid" && -n "${STARTED[$pid]:-}" ]] || return 0
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -f "${STARTED[$pid]}"
    unset "STARTED[$pid]"
}
stop_all_backends() {
    local pid
    for pid in "${!STARTED[@]}"; do
        stop_backend "$pid"
    done
}
stop_spinners() {
    local p
    for p in "${SPINNERS[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    SPINNERS=()
}
cleanup() {
    stop_spinners
    resume_guests
    stop_all_backends
    if [[ $KEEP -eq 0 && -n "$WORKDIR" ]]; then
        rm -f "$IMG"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# "TICKS SWITCHES" of a process and all its descendants: utime+stime in clock
# ticks, and context switches (voluntary + involuntary) summed over every thread.
tree_sample() {
    local root=$1 f line rest total=0 switches=0
    local -A parent=() ticks=()
    local -a fields
    for f in /proc/[0-9]*/stat; do
        { line=$(<"$f"); } 2>/dev/null || continue
        rest=${line##*) }
        read -r -a fields <<<"$rest"
        local pid=${f#/proc/}
        pid=${pid%/stat}
        parent[$pid]=${fields[1]}
        ticks[$pid]=$((fields[11] + fields[12]))
    done
    local -a queue=("$root")
    local -A seen=()
    while [[ ${#queue[@]} -gt 0 ]]; do
        local p=${queue[0]}
        queue=("${queue[@]:1}")
        [[ -z ${seen[$p]:-} ]] || continue
        seen[$p]=1
        total=$((total + ${ticks[$p]:-0}))
        local st key val
        for st in /proc/"$p"/task/*/status; do
            while read -r key val; do
                case "$key" in
                    voluntary_ctxt_switches:|nonvoluntary_ctxt_switches:) switches=$((switches + val)) ;;
                esac
            done 2>/dev/null <"$st" || true
        done
        local c
        for c in "${!parent[@]}"; do
            [[ ${parent[$c]} == "$p" ]] && queue+=("$c")
        done
    done
    echo "$total $switches"
}

start_backend() { # backend device log; sets BACKEND_PID and SOCK
    local backend=$1 device=$2 blog=$3 cmd
    SOCK="$WORKDIR/$backend.sock"
    rm -f "$SOCK"
    if [[ $backend == qsd ]]; then
        local node
        if [[ $device == file ]]; then
            local fileopts="cache.direct=off" rawopts=""
            case "$CACHE" in
                writeback) fileopts="cache.direct=off,aio=io_uring" ;;
                none) fileopts="cache.direct=on,aio=io_uring" ;;
                unsafe) fileopts="cache.direct=off,cache.no-flush=on,aio=io_uring" rawopts=",cache.no-flush=on" ;;
            esac
            node=(--blockdev "driver=file,node-name=file0,filename=$IMG,$fileopts"
                  --blockdev "driver=raw,node-name=disk0,file=file0$rawopts")
        else
            node=(--blockdev "driver=null-co,node-name=disk0,size=$SIZE_BYTES,read-zeroes=on")
        fi
        qemu-storage-daemon "${node[@]}" \
            --export "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path=$SOCK,writable=on,num-queues=$QUEUES" \
            >"$blog" 2>&1 &
        BACKEND_PID=$!
    else
        if [[ $device == file ]]; then cmd=$OURS; else cmd=$OURS_NULL; fi
        cmd=${cmd//\{image\}/$IMG}
        cmd=${cmd//\{socket\}/$SOCK}
        cmd=${cmd//\{size\}/$SIZE_BYTES}
        cmd=${cmd//\{queues\}/$QUEUES}
        log "starting: $cmd"
        (cd "$REPO_ROOT" && exec bash -c "exec $cmd") >"$blog" 2>&1 &
        BACKEND_PID=$!
    fi
    STARTED[$BACKEND_PID]=$SOCK
    for _ in $(seq 1 600); do
        [[ -S "$SOCK" ]] && return 0
        kill -0 "$BACKEND_PID" 2>/dev/null || break
        sleep 0.1
    done
    tail -n 20 "$blog" >&2 || true
    BACKEND_PID=""
    die "back-end $backend ($device) did not create its socket"
}

ANY_FAILED=0

# Boots the guest against a running back-end, samples the back-end's CPU on the
# guest's I/O markers, and appends one row per job to $RESULTS. Status: the guest's.
guest_run() { # round backend device back-end-pid socket
    local round=$1 backend=$2 device=$3 bpid=$4 sock=$5
    local tag="r${round}-${backend}-${device}"
    local clog="$WORKDIR/$tag.console.log" samples="$WORKDIR/$tag.samples" rc=0
    : >"$samples"
    : >"$clog"
    local format=()
    [[ $backend != packed ]] || format=(--packed) # vhost-user-blk-pci,...,packed=on
    "$RUN_GUEST" --socket "$sock" --jobs "$JOBS" --vcpus "$VCPUS" --queues "$QUEUES" --mem "$MEM" "${format[@]}" \
        --log "$clog" --quiet --timeout $((PAIRED ? 240 + 80 * RUNTIME : 120 + 40 * RUNTIME)) \
        --extra-append "vblk.runtime=$RUNTIME vblk.perf_size_mib=$SIZE_MIB" \
        >"$WORKDIR/$tag.run.out" 2>&1 &
    local rpid=$!
    # Follow the console; sample the back-end's CPU on the I/O markers.
    local line
    while IFS= read -r line; do
        line=${line%$'\r'}
        case "$line" in
            "VBLK-IO-START "*|"VBLK-IO-STOP "*)
                # shellcheck disable=SC2086  # split the marker into words
                set -- $line
                printf '%s %s %s\n' "${1#VBLK-IO-}" "$2" "$(tree_sample "$bpid")" >>"$samples" ;;
        esac
    done < <(tail -n +1 -F -s 0.05 --pid="$rpid" "$clog" 2>/dev/null)
    wait "$rpid" || rc=$?
    if [[ $rc -ne 0 ]]; then
        log "guest run failed ($tag); see $WORKDIR/$tag.run.out"
        grep '^RESULT' "$WORKDIR/$tag.run.out" >&2 || true
    fi
    grep -o 'BOOT-SECONDS.*\|RUN-SECONDS.*' "$WORKDIR/$tag.run.out" | tr '\n' ' ' >&2 || true
    echo >&2
    if [[ $backend == split || $backend == packed ]]; then
        # The back-end names the format of each ring it starts; the row must be the one asked for.
        local blog="$WORKDIR/$tag.backend.log"
        if ! grep -q "started: $backend ring" "$blog"; then
            log "the back-end did not start a $backend ring ($tag); see $blog"
            return 1
        fi
        log "$tag: back-end log: $(grep -m1 -o "queue 0: started: $backend ring[^,]*" "$blog")"
    fi
    # One row per job: round backend device job iops bw_kib ios cpu_ticks
    tr -d '\r' <"$clog" | grep '^VBLK-PERF ' | while read -r _ kvs; do
        local name="" iops="" bw="" ios="" kv
        for kv in $kvs; do
            case "$kv" in
                name=*) name=${kv#name=} ;;
                iops=*) iops=${kv#iops=} ;;
                bw_kib=*) bw=${kv#bw_kib=} ;;
                ios=*) ios=${kv#ios=} ;;
            esac
        done
        local s0 s1
        s0=$(awk -v n="$name" '$1 == "START" && $2 == n {print $3, $4}' "$samples" | tail -n1)
        s1=$(awk -v n="$name" '$1 == "STOP" && $2 == n {print $3, $4}' "$samples" | tail -n1)
        local cpu_ticks=NA switches=NA t0 w0 t1 w1
        if [[ -n "$s0" && -n "$s1" ]]; then
            read -r t0 w0 <<<"$s0"
            read -r t1 w1 <<<"$s1"
            cpu_ticks=$((t1 - t0))
            switches=$((w1 - w0))
        fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$backend" "$device" "$name" "$iops" "$bw" "$ios" "$cpu_ticks" "$switches" >>"$RESULTS"
    done
    return "$rc"
}

run_one() { # round backend device
    local round=$1 backend=$2 device=$3
    log "round $round: $backend on $device: jobs $JOBS (${RUNTIME}s each)"
    # Both back-ends start with the whole image in the page cache, even on a host that
    # reclaims cold pages between runs.
    [[ $device != file ]] || cat "$IMG" >/dev/null
    start_backend "$backend" "$device" "$WORKDIR/r${round}-${backend}-${device}.backend.log"
    local bpid=$BACKEND_PID
    guest_run "$round" "$backend" "$device" "$bpid" "$SOCK" || ANY_FAILED=1
    stop_backend "$bpid"
}

# --paired: both guests run at once, and only one of them at any moment. Every
# SLICE seconds the running QEMU is stopped (SIGSTOP) and the other resumed, so
# the two back-ends see the host in the same state, slice by slice, while each
# still sleeps between its own guest's kicks as it would alone.
PAUSED=()
resume_guests() {
    local p
    for p in "${PAUSED[@]}"; do
        kill -CONT "$p" 2>/dev/null || true
    done
    PAUSED=()
}
qemu_of() { # socket -> pid of the QEMU connected to it, if running
    pgrep -f -- "qemu-system-x86_64 .*path=$1( |$)" | head -n1 || true
}
run_pair() { # round device
    local round=$1 device=$2 qpid opid qsock osock g1 g2 rc=0 ref=${BACKENDS[0]} other=${BACKENDS[1]}
    log "round $round: $ref and $other on $device, paired (alternating every ${SLICE}s): jobs $JOBS (${RUNTIME}s each)"
    [[ $device != file ]] || cat "$IMG" >/dev/null
    start_backend "$ref" "$device" "$WORKDIR/r${round}-${ref}-${device}.backend.log"
    qpid=$BACKEND_PID qsock=$SOCK
    start_backend "$other" "$device" "$WORKDIR/r${round}-${other}-${device}.backend.log"
    opid=$BACKEND_PID osock=$SOCK
    guest_run "$round" "$ref" "$device" "$qpid" "$qsock" &
    g1=$!
    guest_run "$round" "$other" "$device" "$opid" "$osock" &
    g2=$!
    local a="" b="" turn=0
    while kill -0 "$g1" 2>/dev/null && kill -0 "$g2" 2>/dev/null; do
        [[ -n "$a" ]] || a=$(qemu_of "$qsock")
        [[ -n "$b" ]] || b=$(qemu_of "$osock")
        if [[ -n "$a" && -n "$b" ]]; then
            if ((turn)); then
                kill -STOP "$a" 2>/dev/null || true
                kill -CONT "$b" 2>/dev/null || true
            else
                kill -STOP "$b" 2>/dev/null || true
                kill -CONT "$a" 2>/dev/null || true
            fi
            PAUSED=("$a" "$b")
            turn=$((1 - turn))
        fi
        sleep "$SLICE"
    done
    resume_guests # the one left finishes alone
    wait "$g1" || rc=1
    wait "$g2" || rc=1
    [[ $rc -eq 0 ]] || ANY_FAILED=1
    stop_backend "$qpid"
    stop_backend "$opid"
}

if [[ " ${DEVICE_LIST[*]} " == *" file "* ]]; then
    log "preparing ${SIZE_MIB} MiB raw image (allocated, page-cached)"
    qemu-img create -q -f raw "$IMG" "${SIZE_MIB}M"
    dd if=/dev/zero of="$IMG" bs=1M count="$SIZE_MIB" conv=notrunc status=none
    cat "$IMG" >/dev/null
fi

LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
if [[ $SPIN_IDLE -eq 1 ]]; then
    command -v chrt >/dev/null || die "--spin-idle needs chrt (util-linux)"
    for _ in $(seq 1 "$(nproc)"); do
        chrt -i 0 bash -c 'while :; do :; done' &
        SPINNERS+=($!)
    done
    log "spin-idle: ${#SPINNERS[@]} SCHED_IDLE busy loops keep the CPUs from halting"
fi
for round in $(seq 1 "$ROUNDS"); do
    order=("${BACKENDS[@]}")
    if [[ ${#BACKENDS[@]} -eq 2 && $((round % 2)) -eq 0 ]]; then
        order=("${BACKENDS[1]}" "${BACKENDS[0]}")
    fi
    for device in "${DEVICE_LIST[@]}"; do
        if ((PAIRED)); then
            run_pair "$round" "$device"
            continue
        fi
        for backend in "${order[@]}"; do
            run_one "$round" "$backend" "$device"
        done
    done
done

# ---------------------------------------------------------------- table
TABLE=$(awk -F'\t' -v tck="$CLK_TCK" -v jobs="$JOBS" -v devs="$DEVICES" -v names="${BACKENDS[*]}" '
    {
        k = $2 SUBSEP $3 SUBSEP $4
        n[k]++; iops[k] += $5; bw[k] += $6; ios[k] += $7
        if ($8 == "NA") bad[k] = 1; else { ticks[k] += $8; sw[k] += $9 }
    }
    function cpu(k) { return (k in bad || ios[k] == 0) ? -1 : (ticks[k] / tck) / ios[k] * 1e6 }
    function fmtcpu(c) { return c < 0 ? "n/a" : sprintf("%.2f", c) }
    function spr(k) { return (k in bad || ios[k] == 0) ? -1 : sw[k] / ios[k] }
    function uspw(k) { return (k in bad || sw[k] == 0) ? -1 : (ticks[k] / tck) / sw[k] * 1e6 }
    END {
        nj = split(jobs, J, ","); nd = split(devs, D, ",")
        printf "%-12s %-6s %-20s %10s %10s %14s %12s %12s\n", "backend", "device", "job", "IOPS", "MB/s", "CPU s/Mreq", "switch/req", "CPU us/switch"
        for (d = 1; d <= nd; d++) for (j = 1; j <= nj; j++) {
            nb = split(names, B, " ")
            for (b = 1; b <= nb; b++) {
                k = B[b] SUBSEP D[d] SUBSEP J[j]
                if (!(k in n)) { printf "%-12s %-6s %-20s %10s %10s %14s %12s %12s\n", B[b], D[d], J[j], "FAIL", "-", "-", "-", "-"; continue }
                printf "%-12s %-6s %-20s %10d %10.1f %14s %12s %12s\n", B[b], D[d], J[j],
                    iops[k] / n[k], bw[k] / n[k] * 1024 / 1e6, fmtcpu(cpu(k)), fmtcpu(spr(k)), fmtcpu(uspw(k))
            }
            if (nb == 2) {
                q = B[1] SUBSEP D[d] SUBSEP J[j]; o = B[2] SUBSEP D[d] SUBSEP J[j]
                if ((q in n) && (o in n) && iops[q] > 0 && bw[q] > 0) {
                    cq = cpu(q); co = cpu(o)
                    sq = spr(q); so = spr(o); wq = uspw(q); wo = uspw(o)
                    printf "%-12s %-6s %-20s %10.2f %10.2f %14s %12s %12s\n", B[2] "/" B[1], D[d], J[j],
                        (iops[o] / n[o]) / (iops[q] / n[q]), (bw[o] / n[o]) / (bw[q] / n[q]),
                        (cq > 0 && co >= 0) ? sprintf("%.2f", co / cq) : "n/a",
                        (sq > 0 && so >= 0) ? sprintf("%.2f", so / sq) : "n/a",
                        (wq > 0 && wo >= 0) ? sprintf("%.2f", wo / wq) : "n/a"
                }
            }
        }
    }' "$RESULTS")

HEADER="# vm-bench: guest $(cat "$REPO_ROOT/.cache/guest/kernel-release" 2>/dev/null || echo '?') under QEMU TCG ($(qemu-system-x86_64 --version | head -n1 | sed 's/^QEMU emulator version //')), ${VCPUS} vCPU, ${QUEUES} queue(s); fio ${RUNTIME}s per job, ${SIZE_MIB} MiB device; ${ROUNDS} round(s); host $(nproc) CPUs, load average at start ${LOAD_AT_START}$([[ $SPIN_IDLE -eq 0 ]] || echo "; --spin-idle (CPUs kept from halting)")$([[ $PACKED -eq 0 ]] || echo "; --packed: split and packed virtqueues, both on --ours")$([[ $PAIRED -eq 0 ]] || echo "; --paired (both at once, one guest running at a time, ${SLICE} s slices)")$([[ -z $CACHE ]] || echo "; --cache $CACHE (file device, both back-ends)")$([[ -z $POLL_US ]] || echo "; ours --poll-us $POLL_US")"
{
    echo "$HEADER"
    echo "$TABLE"
} | tee ${OUT:+"$OUT"}

if [[ $KEEP -eq 1 ]]; then
    log "kept $WORKDIR"
else
    rm -rf "$WORKDIR"
fi
[[ $ANY_FAILED -eq 0 ]] || die "some guest runs failed"
