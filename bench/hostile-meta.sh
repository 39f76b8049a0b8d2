#!/usr/bin/env bash
# Peak memory and time of `usb-update check` on hostile metadata (figures: docs/benchmarks.md),
# each beside a valid bundle's check measured in the same run (the baseline):
# duplicate members with megabytes of junk, files of tiny JSON values far larger than any
# signed pin allows, a million names in tuf/, a 20 GiB sparse file in a signed tuf/.
# Prints figures and the 1-minute load; asserts nothing (the tests do behaviour).
#
#   bench/hostile-meta.sh                  RUNS=5 by default
#   BASE_BIN=/path/to/old/usb-update bench/hostile-meta.sh   also the same cases with an
#                                          older binary (one run each, 300 s at most)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-5}
work=$(mktemp -d)
. bench/lib.sh
trap bench_cleanup EXIT

bench_build
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

"$make_bundle" --out "$work/valid" --targets 1000 --rotations 3 \
  --device-root-dir "$work/tuf" --device-roots 1 >/dev/null
mkdir -p "$work/policy" "$work/signed-policy" "$work/sysroot"
ostree admin init-fs --modern "$work/sysroot" >/dev/null 2>&1
ostree admin os-init --sysroot="$work/sysroot" lmp >/dev/null
sota_toml "$work/conf/sota.toml" "$work/sysroot" "$work/var" "$work/tuf" ostree

# Each hostile case is a bundle of tuf/ only: every one is refused before content matters.
case_dir() { mkdir -p "$work/$1"; cp -a "$work/valid/tuf" "$work/$1/tuf"; echo "$work/$1/tuf"; }

python3 - "$work" <<'PY'
import json, os, sys
work = sys.argv[1]
MiB = 1 << 20

def case(name):
    d = os.path.join(work, name, "tuf")
    os.makedirs(os.path.dirname(d), exist_ok=True)
    os.system(f"cp -a '{work}/valid/tuf' '{d}'")
    return d

def tiny_array(size):
    # [0,0,...,0] of `size` bytes: the most values per byte JSON allows.
    n = (size - 2) // 2
    return "[" + "0," * (n - 1) + "0]"

def dup_in_front(path, total):
    # A second "signed" member of junk in front of the real one: a parser that keeps the
    # last member sees the genuine, signed file.
    text = open(path).read()
    at = text.index('"signed":')
    junk = '{"junk":' + tiny_array(total - len(text) - 30) + '},'
    open(path, "w").write(text[:at] + '"signed":' + junk + text[at:])

d = case("dup-targets-16MiB")
dup_in_front(f"{d}/targets.json", 16 * MiB - 64)
d = case("dup-timestamp-1MiB")
dup_in_front(f"{d}/timestamp.json", MiB - 64)
d = case("tiny-targets-16MiB")
open(f"{d}/targets.json", "w").write(tiny_array(16 * MiB - 64))
d = case("tiny-objects-root-1MiB")
n = (MiB - 200) // 8
objs = ",".join(['{"a":0}'] * n)
open(f"{d}/2.root.json", "w").write(
    '{"signatures":[],"signed":{"_type":"Root","version":2,"x":[' + objs + ']}}')
d = case("tiny-bundle-targets-1MiB")
open(f"{d}/bundle-targets.json", "w").write(
    '{"signatures":[' + ",".join(['{}'] * ((MiB - 100) // 3)) + '],"signed":{}}')
PY

# A million names in tuf/.
names=$(case_dir names-1M)
python3 - "$names" <<'PY'
import os, sys
d = sys.argv[1]
for i in range(1_000_000):
    os.close(os.open(f"{d}/n{i:07d}", os.O_CREAT | os.O_WRONLY, 0o644))
PY

# A signed bundle whose targets.json became a 20 GiB sparse file after signing.
sparse=$(case_dir sparse-20GiB-signed)
openssl genpkey -algorithm ed25519 -out "$work/op.pem" 2>/dev/null
"$bin" bundle sign --key "$work/op.pem" "$(dirname "$sparse")" >/dev/null
pub=$(openssl pkey -in "$work/op.pem" -pubout -outform DER | tail -c 32 | od -An -tx1 | tr -d ' \n')
printf '[signature]\nrequired = true\ntrusted_keys = ["%s"]\n' "$pub" >"$work/signed-policy/sig.toml"
truncate -s 20G "$sparse/targets.json"

cases=(valid dup-targets-16MiB dup-timestamp-1MiB tiny-targets-16MiB tiny-objects-root-1MiB
  tiny-bundle-targets-1MiB names-1M sparse-20GiB-signed)

# measure BIN CASE RUNS TIMEOUT: "exit median_peak_kB median_ms first_error_line"
measure() {
  local b=$1 c=$2 n=$3 limit=$4 policy=$work/policy peaks=() times=() code=0 start end
  [ "$c" = sparse-20GiB-signed ] && policy=$work/signed-policy
  local args=(check -c "$work/conf" -p "$policy" --src-dir "$work/$c")
  for _ in $(seq "$n"); do
    start=$(date +%s%N)
    code=0
    timeout "$limit" /usr/bin/time -f "%M" -o "$work/t" "$b" "${args[@]}" >"$work/out" 2>&1 || code=$?
    end=$(date +%s%N)
    peaks+=("$(tail -1 "$work/t")")
    times+=($(((end - start) / 1000000)))
  done
  local err
  err=$(grep -m1 '^error: ' "$work/out" | cut -c1-110 || true)
  printf '%s %s %s %s\n' "$code" \
    "$(printf '%s\n' "${peaks[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')" \
    "$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')" \
    "${err:-(none)}"
}

size_of() { du -sh --apparent-size "$work/$1/tuf" | cut -f1; }

report() {
  local b=$1 n=$2 limit=$3 base_kb=
  printf '%-26s %8s %5s %10s %8s %9s  %s\n' case "tuf/" exit "peak MB" "x valid" "median ms" "error line"
  for c in "${cases[@]}"; do
    read -r code kb ms err < <(measure "$b" "$c" "$n" "$limit")
    [ -z "$base_kb" ] && base_kb=$kb
    printf '%-26s %8s %5s %10.1f %8.2f %9s  %s\n' "$c" "$(size_of "$c")" "$code" \
      "$(echo "$kb / 1024" | bc -l)" "$(echo "$kb / $base_kb" | bc -l)" "$ms" "$err"
  done
}

echo "== $bin, median of $runs runs"
report "$bin" "$runs" 120
if [ -n "${BASE_BIN:-}" ]; then
  echo "== $BASE_BIN (older binary), 1 run each, 300 s at most (exit 124: timed out)"
  report "$BASE_BIN" 1 300
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
