#!/usr/bin/env bash
# Time and peak memory of `usb-update check` on a bundle whose targets.json has 1,000
# targets and whose tuf/ carries 3 root rotations (goal: under 100 ms and under 20 MB).
# Prints figures; asserts nothing (the tests do behaviour, this script does speed).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-20}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release --quiet -p test-kit --bin make-bundle
# The device binary with its simulated boot (the sandbox is never booted), nothing else.
cargo build --release --quiet -p usb-update --features simulation --bin usb-update
bin=target/release/usb-update
target/release/make-bundle --out "$work/bundle" --targets 1000 --rotations 3 \
  --device-root-dir "$work/tuf" --device-roots 1 >/dev/null

mkdir -p "$work/conf" "$work/policy" "$work/var" "$work/sysroot"
ostree admin init-fs --modern "$work/sysroot" >/dev/null 2>&1
ostree admin os-init --sysroot="$work/sysroot" lmp >/dev/null
cat >"$work/conf/sota.toml" <<TOML
[provision]
primary_ecu_hardware_id = "intel-corei7-64"
[pacman]
type = "ostree"
sysroot = "$work/sysroot"
booted = "staged"
tags = "devel"
[storage]
path = "$work/var"
uptane_metadata_path = "$work/tuf"
[import]
base_path = "$work/var/import"
TOML

args=(check -c "$work/conf" -p "$work/policy" --src-dir "$work/bundle")
"$bin" "${args[@]}" >"$work/out.txt" || true
code=$(awk '/^install would return/ {print $4}' "$work/out.txt")
echo "bundle: $(du -sh "$work/bundle/tuf" | cut -f1) of metadata, targets.json $(stat -c %s "$work/bundle/tuf/targets.json") bytes, $(ls "$work/bundle/tuf" | grep -c root.json) root files; check exits $code"

times=()
peak=0
for _ in $(seq "$runs"); do
  start=$(date +%s%N)
  /usr/bin/time -f "%M" -o "$work/t" "$bin" "${args[@]}" >/dev/null || true
  end=$(date +%s%N)
  times+=($(((end - start) / 1000)))
  kb=$(tail -1 "$work/t")
  ((kb > peak)) && peak=$kb
done
printf '%s\n' "${times[@]}" | sort -n | awk -v runs="$runs" -v peak="$peak" '
  { t[NR] = $1 }
  END { printf "check, %d runs: min %.1f ms, median %.1f ms, max %.1f ms; peak RSS %.1f MB (goals: < 100 ms, < 20 MB)\n",
        runs, t[1] / 1000, t[int((NR + 1) / 2)] / 1000, t[NR] / 1000, peak / 1024 }'
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
