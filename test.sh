#!/usr/bin/env bash
# Installs what the tests need (Debian packages, NuGet packages, the test guest) and runs every
# test: unit, property, and interop tests with real peers (qemu-storage-daemon, QEMU + Linux).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
start=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$1" "$(( $(date +%s) - start ))"; }

step "Debian packages"
packages=(qemu-system-x86 qemu-system-common qemu-utils qemu-block-extra busybox-static fio e2fsprogs util-linux xz-utils
          ceph-mon ceph-osd ceph-common librbd-dev python3-rados uuid-runtime nbdkit
          chromium chromium-driver)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "all present: ${packages[*]}"
fi
command -v dotnet >/dev/null || { echo "test.sh: the .NET 10 SDK is needed (dotnet is not on PATH)" >&2; exit 1; }

step "dotnet restore"
dotnet restore VirtioSharp.slnx --nologo -v q

if [ -x scripts/build-guest.sh ]; then
  step "test guest (Linux kernel from Debian, busybox initramfs)"
  scripts/build-guest.sh
fi

step "build (Release, warnings are errors)"
dotnet build VirtioSharp.slnx -c Release --no-restore --nologo -v q -clp:NoSummary

step "format check"
dotnet format VirtioSharp.slnx --verify-no-changes --no-restore -v q

step "tests"
results="$(mktemp -d)"
set +e
dotnet test tests/VirtioSharp.Tests/VirtioSharp.Tests.csproj -c Release --no-build --nologo \
  --logger "console;verbosity=normal" --logger "trx;LogFileName=results.trx" --results-directory "$results"
rc=$?
set -e
trx="$results/results.trx"
if [ -f "$trx" ]; then
  counters=$(grep -o '<Counters [^>]*>' "$trx" | head -n 1)
  get() { echo "$counters" | grep -o "$1=\"[0-9]*\"" | grep -o '[0-9]*'; }
  passed=$(get passed); failed=$(get failed); total=$(get total); executed=$(get executed)
  skipped=$(( total - executed ))
  if [ "${failed:-0}" != "0" ]; then
    step "failed tests (from $trx)"
    scripts/trx-failures.py "$trx" || true
  fi
  step "done"
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "test.sh: no test results were written" >&2
  rc=1
fi
exit $rc
