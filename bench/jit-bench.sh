#!/usr/bin/env bash
# What the JIT costs a new `vblk serve`: the CLI built as plain IL and as ReadyToRun, each with
# and without tiered PGO, every configuration in a fresh back-end process. For each process: its
# CPU until it listens, then two `vblk bench` runs one after the other (two connections), each
# with the back-end's CPU seconds per million requests (/proc/PID/stat) and the methods the JIT
# compiled during it (counted in the runtime's perf map). Configurations alternate within every
# round, rounds rotate the order; the summary gives medians.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: bench/jit-bench.sh [-h|--help]

Builds the vblk CLI twice into a temporary folder (dotnet build: IL only; dotnet publish with
PublishReadyToRun for this machine's runtime identifier), then for every round, device and depth
starts one `vblk serve` per configuration and runs `vblk bench` (4 KiB random reads) against it
twice. Per run it prints the back-end's user and system CPU per million requests, the requests
per second and the methods compiled by the JIT during the run (first run: the process's first
connection; second run: a later one).

Settings come from the environment:
  RUNTIME=S      seconds measured per run (default 5)
  RAMP=S         warm-up seconds per run, counted in the CPU (default 1)
  ROUNDS=N       rounds (default 3)
  DEVICES=LIST   from: null file (default "null file"; file = a raw image in the page cache)
  DEPTHS=LIST    queue depths (default "1 32")
  IMAGE_SIZE=SZ  raw image size (default 256M)
  CONFIGS=LIST   configurations, each BUILD or BUILD+VAR=VALUE[+VAR=VALUE] with BUILD il or r2r
                 and runtime settings as environment variables (default:
                 "il r2r il+DOTNET_TieredPGO=0 r2r+DOTNET_TieredPGO=0")
The client (`vblk bench`) is the ReadyToRun build in every run.
USAGE
}
case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    "") ;;
    *) echo "jit-bench: unknown argument: $1 (see --help)" >&2; exit 2 ;;
esac

RUNTIME=${RUNTIME:-5}
RAMP=${RAMP:-1}
ROUNDS=${ROUNDS:-3}
DEVICES=${DEVICES:-"null file"}
DEPTHS=${DEPTHS:-"1 32"}
IMAGE_SIZE=${IMAGE_SIZE:-256M}
read -r -a configs <<<"${CONFIGS:-il r2r il+DOTNET_TieredPGO=0 r2r+DOTNET_TieredPGO=0}"
for dev in $DEVICES; do
    [[ $dev == null || $dev == file ]] || { echo "jit-bench: unknown device $dev (null, file)" >&2; exit 2; }
done
for c in "${configs[@]}"; do
    [[ ${c%%+*} == il || ${c%%+*} == r2r ]] || { echo "jit-bench: configuration $c does not start with il or r2r" >&2; exit 2; }
done
case "$(uname -m)" in
    x86_64) rid=linux-x64 ;;
    aarch64) rid=linux-arm64 ;;
    *) echo "jit-bench: no ReadyToRun runtime identifier for $(uname -m)" >&2; exit 1 ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
work=$(mktemp -d /tmp/jit-bench.XXXXXX)
serve_pid=""
cleanup() {
    if [[ -n $serve_pid ]]; then
        kill "$serve_pid" 2>/dev/null || true
        wait "$serve_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

project=src/VirtioSharp.Cli/VirtioSharp.Cli.csproj
echo "jit-bench: building the CLI as IL and as ReadyToRun ($rid)..." >&2
dotnet build "$project" -c Release -o "$work/il" --nologo -v q -clp:NoSummary >"$work/build.log" 2>&1 ||
    { cat "$work/build.log" >&2; exit 1; }
dotnet publish "$project" -c Release -r "$rid" --self-contained false -p:PublishReadyToRun=true \
    -o "$work/r2r" --nologo -v q >"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; exit 1; }
client=$work/r2r/vblk.dll

image=$work/disk.raw
head -c "$(numfmt --from=iec "$IMAGE_SIZE")" /dev/urandom >"$image"
hz=$(getconf CLK_TCK)
ticks() { # pid: "user system" clock ticks so far (fields 14 and 15 after the command name)
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12, $13 }'
}
methods() { # pid: methods compiled so far (perf map lines that end in their tier, [QuickJitted] ...)
    if [[ -f /tmp/perf-$1.map ]]; then grep -c '\[[A-Za-z0-9]*\]$' "/tmp/perf-$1.map" || true; else echo 0; fi
}
json_field() { # file section key
    awk -v section="\"$2\"" -v key="\"$3\"" '
        index($0, section ":") { inside = 1; next }
        inside && index($0, key ":") { gsub(/[ ,]/, "", $0); split($0, kv, ":"); print kv[2]; exit }
        inside && /^  }/ { inside = 0 }' "$1"
}

results=$work/results.txt
: >"$results"
echo "# jit-bench $(date -u +%Y-%m-%dT%H:%MZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $(uname -sr), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), .NET $(dotnet --version)"
echo "# runtime ${RUNTIME}s (+${RAMP}s ramp) per run, ${ROUNDS} rounds, 4 KiB random reads; cpu = back-end utime/stime per million requests (ramp included)"
echo
printf '%-30s %-4s %5s %5s %4s %9s %8s %8s %8s %8s\n' config dev depth round run IOPS usr-s/M sys-s/M cpu-s/M methods
for round in $(seq 1 "$ROUNDS"); do
    for dev in $DEVICES; do
        for depth in $DEPTHS; do
            n=${#configs[@]}
            for ((i = 0; i < n; i++)); do
                config=${configs[(i + round - 1) % n]}
                IFS=+ read -r -a parts <<<"$config"
                build=${parts[0]}
                settings=("${parts[@]:1}")
                sock=$work/serve.sock
                rm -f "$sock"
                if [[ $dev == null ]]; then target=(--backend null --size 1G); else target=("$image"); fi
                cat "$image" >/dev/null
                env DOTNET_PerfMapEnabled=3 "${settings[@]}" dotnet "$work/$build/vblk.dll" serve "${target[@]}" \
                    --socket "$sock" >"$work/serve.log" 2>&1 &
                serve_pid=$!
                for _ in $(seq 1 400); do [[ -S $sock ]] && break; sleep 0.05; done
                [[ -S $sock ]] || { echo "jit-bench: vblk serve did not listen" >&2; cat "$work/serve.log" >&2; exit 1; }
                read -r u0 s0 <<<"$(ticks "$serve_pid")"
                m0=$(methods "$serve_pid")
                printf '%-30s %-4s %5s %5s %4s %9s %8s %8s %8.2f %8s\n' "$config" "$dev" "$depth" "$round" start - - - \
                    "$(awk -v t=$((u0 + s0)) -v hz="$hz" 'BEGIN { print t / hz }')" "$m0"
                echo "$config $dev $depth start 0 0 0 $(awk -v t=$((u0 + s0)) -v hz="$hz" 'BEGIN { print t / hz }') $m0" >>"$results"
                for run in 1 2; do
                    read -r u0 s0 <<<"$(ticks "$serve_pid")"
                    m0=$(methods "$serve_pid")
                    dotnet "$client" bench --socket "$sock" --rw randread --bs 4K --iodepth "$depth" \
                        --runtime "$RUNTIME" --ramp "$RAMP" --json >"$work/run.json" 2>/dev/null
                    read -r u1 s1 <<<"$(ticks "$serve_pid")"
                    m1=$(methods "$serve_pid")
                    ops=$(json_field "$work/run.json" total ops)
                    iops=$(json_field "$work/run.json" total iops)
                    line=$(awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$hz" -v ops="$ops" -v run="$RUNTIME" -v ramp="$RAMP" '
                        BEGIN { n = ops * (run + ramp) / run / 1e6; if (n <= 0) n = 1e-9
                                printf "%.2f %.2f %.2f", u / hz / n, s / hz / n, (u + s) / hz / n }')
                    read -r usr sys cpu <<<"$line"
                    printf '%-30s %-4s %5s %5s %4s %9.0f %8s %8s %8s %8s\n' "$config" "$dev" "$depth" "$round" "$run" "$iops" "$usr" "$sys" "$cpu" $((m1 - m0))
                    echo "$config $dev $depth $run $iops $usr $sys $cpu $((m1 - m0))" >>"$results"
                done
                kill "$serve_pid"
                wait "$serve_pid" 2>/dev/null || true
                rm -f "/tmp/perf-$serve_pid.map" "/tmp/perfinfo-$serve_pid.map"
                serve_pid=""
            done
        done
    done
done

echo
echo "# median over rounds: start = CPU seconds and methods compiled until the back-end listens;"
echo "# run 1 = the process's first connection, run 2 = the next one (cpu-s/M: back-end CPU seconds per million requests)"
printf '%-30s %-4s %5s %8s %8s %9s %9s %9s %9s %8s %8s\n' config dev depth start-s start-m run1-IOPS run2-IOPS run1-s/M run2-s/M run1-m run2-m
median() { # values...: the median
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}
pick() { # config dev depth run field
    awk -v c="$1" -v d="$2" -v q="$3" -v r="$4" -v f="$5" '$1 == c && $2 == d && $3 == q && $4 == r { print $f }' "$results"
}
for dev in $DEVICES; do
    for depth in $DEPTHS; do
        for config in "${configs[@]}"; do
            # shellcheck disable=SC2046 # one value per line, split on purpose
            printf '%-30s %-4s %5s %8.2f %8.0f %9.0f %9.0f %9.2f %9.2f %8.0f %8.0f\n' "$config" "$dev" "$depth" \
                "$(median $(pick "$config" "$dev" "$depth" start 8))" "$(median $(pick "$config" "$dev" "$depth" start 9))" \
                "$(median $(pick "$config" "$dev" "$depth" 1 5))" "$(median $(pick "$config" "$dev" "$depth" 2 5))" \
                "$(median $(pick "$config" "$dev" "$depth" 1 8))" "$(median $(pick "$config" "$dev" "$depth" 2 8))" \
                "$(median $(pick "$config" "$dev" "$depth" 1 9))" "$(median $(pick "$config" "$dev" "$depth" 2 9))"
        done
    done
done
