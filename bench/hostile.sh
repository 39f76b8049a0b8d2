#!/usr/bin/env bash
# Peak memory and time of the hostile-stick cases (those of tests/privileged/hostile_stick.rs): each case is
# an ext4 stick image holding the bundle with one hostile thing planted, loop-mounted
# read-only and nodev as the agent mounts it, and `usb-update install --src-dir` on it (the
# stick-root listing goes through `agent handle`, which finds the bundle). Baseline: the
# same bundle unharmed, installed in the same run. Prints per case the exit code, the
# seconds, the peak RSS (/usr/bin/time) and whether it stayed under 100 MB, with the load
# average. Each case runs RUNS times (default 3); the median is printed.
# Sizes: FILES and BYTES of the bundle's commit (default 2,000 files, 50 MB), BOMB_GIB (the
# decompression bomb's inflated size, default 3), ROOT_ENTRIES (default 1,000,000).
set -euo pipefail
cd "$(dirname "$0")/.."
files=${FILES:-2000}
bytes=${BYTES:-50000000}
bomb_gib=${BOMB_GIB:-3}
root_entries=${ROOT_ENTRIES:-1000000}
runs=${RUNS:-3}
work=$(mktemp -d /var/tmp/usb-update-hostile.XXXXXX)
. bench/lib.sh
loops=()
hostile_cleanup() {
  bench_cleanup
  for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
}
trap hostile_cleanup EXIT
bench_build
pgrep -x systemd-udevd >/dev/null || systemd-udevd --daemon

# bomb FILE DECLARES INFLATES: rewrite the archive content object FILE with its header's
# size set to DECLARES and data that inflates to INFLATES zero bytes.
bomb() {
  python3 - "$@" <<'PY'
import struct, sys, zlib
path, declared, inflates = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = open(path, "rb").read()
size = struct.unpack(">I", data[:4])[0]
head = bytearray(data[:8 + size])
head[8:16] = struct.pack(">Q", declared)
c = zlib.compressobj(9, zlib.DEFLATED, -15)
zeros = bytes(1 << 20)
with open(path, "wb") as f:
    f.write(head)
    while inflates:
        n = min(inflates, len(zeros))
        f.write(c.compress(zeros[:n]))
        inflates -= n
    f.write(c.flush())
PY
}

"$make_bundle" --out "$work/image" --version 1 --device-root-dir "$work/tuf" >/dev/null
"$make_bundle" --out "$work/bundle" --version 2 \
  --bulk-files "$files" --bulk-bytes "$bytes" >/dev/null
v1=$(ostree --repo="$work/image/ostree_repo" rev-parse intel-corei7-64-lmp)
v2=$(ostree --repo="$work/bundle/ostree_repo" rev-parse intel-corei7-64-lmp)
objects=$work/bundle/ostree_repo/objects
largest() { find "$objects" -name "*.$1" -printf '%s %P\n' | sort -n | tail -1 | cut -d' ' -f2; }
filez=ostree_repo/objects/$(largest filez)
dirtree=ostree_repo/objects/$(largest dirtree)
commit=ostree_repo/objects/${v2:0:2}/${v2:2}.commit
printf 'shadow:$6$hostsecret$x:19000:0:99999:7:::\n' >"$work/secret"

# A device: a fresh sysroot running v1 for every run (a successful install changes it).
device() {
  # Deployments carry the immutable bit.
  chattr -R -f -i "$work/dev" 2>/dev/null || true
  rm -rf "$work/dev" && mkdir -p "$work/dev/policy"
  sysroot "$work/dev/sysroot" "$work/image/ostree_repo" "$v1"
  sota_toml "$work/dev/conf/sota.toml" "$work/dev/sysroot" "$work/dev/var" "$work/tuf" ostree
  cat >"$work/dev/policy/p.toml" <<TOML
[agent]
lock_file = "$work/dev/aklite.lock"
run_dir = "$work/dev/run"
reboot_command = ["true"]
aklite_unit = ""
report = false
[media]
require_usb = false
TOML
}

# stick NAME PLANT...: an ext4 image of the bundle (at update/) with PLANT run in the
# content directory; prints the image path.
stick() {
  local name=$1
  shift
  local c=$work/c-$name
  rm -rf "$c" && mkdir -p "$c" && cp -a "$work/bundle" "$c/update"
  (cd "$c" && eval "$@")
  local inodes=$(($(find "$c" | wc -l) + 4096))
  local mb=$(($(du -sm "$c" | cut -f1) * 2 + 64 + inodes / 2048))
  truncate -s "${mb}M" "$work/$name.img"
  mkfs.ext4 -q -F -N "$inodes" -d "$c" "$work/$name.img"
  rm -rf "$c"
  echo "$work/$name.img"
}

# measure IMAGE MODE: MODE install (from a ro,nodev mount) or agent; prints "code seconds kb".
measure() {
  local img=$1 mode=$2 loop code
  device
  drop_caches
  loop=$(losetup --find --show "$img")
  loops+=("$loop")
  if [ "$mode" = agent ]; then
    udevadm settle -t 10 || true
    /usr/bin/time -f "%e %M" -o "$work/t" "$bin" agent handle -c "$work/dev/conf" \
      -p "$work/dev/policy" "$loop" >"$work/out" 2>"$work/err" && code=0 || code=$?
  else
    mkdir -p "$work/mnt"
    mount -o ro,nosuid,nodev,noexec "$loop" "$work/mnt"
    /usr/bin/time -f "%e %M" -o "$work/t" "$bin" install -c "$work/dev/conf" \
      -p "$work/dev/policy" --src-dir "$work/mnt/update" >"$work/out" 2>"$work/err" && code=0 || code=$?
    umount "$work/mnt"
  fi
  losetup -d "$loop"
  if grep -q hostsecret "$work/out" "$work/err"; then echo "LEAK: the host secret in the output" >&2; fi
  echo "$code $(tail -1 "$work/t")"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# case NAME MODE PLANT...
row() {
  local name=$1 mode=$2
  shift 2
  local img codes=() secs=() kbs=() r
  img=$(stick "$name" "$@")
  for _ in $(seq "$runs"); do
    read -r c s k <<<"$(measure "$img" "$mode")"
    codes+=("$c") secs+=("$s") kbs+=("$k")
  done
  rm -f "$img"
  local s k mb
  s=$(printf '%s\n' "${secs[@]}" | median)
  k=$(printf '%s\n' "${kbs[@]}" | median)
  mb=$(echo "$k / 1024" | bc -l)
  printf '%-34s %-7s %5s %8.2f %9.1f  %s\n' "$name" "$mode" "${codes[0]}" "$s" "$mb" \
    "$(verdict "$mb < 100")"
  tail -1 "$work/err" | sed 's/^/    /' | cut -c1-160
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores; commit: $files files, $bytes bytes"
printf '%-34s %-7s %5s %8s %9s  %s\n' case via exit seconds "peak MB" "under 100 MB"
row baseline-good install true
row c1-config-link-shadow install "ln -sf /etc/shadow update/ostree_repo/config"
row c1-filez-link-shadow install "ln -sf /etc/shadow update/$filez"
row c2-fifo-timestamp install "rm update/tuf/timestamp.json && mkfifo update/tuf/timestamp.json"
row c2-fifo-config install "rm update/ostree_repo/config && mkfifo update/ostree_repo/config"
row c2-fifo-dirtree install "rm update/$dirtree && mkfifo update/$dirtree"
row c2-fifo-filez install "rm update/$filez && mkfifo update/$filez"
row c3-commit-link-dev-zero install "ln -sf /dev/zero update/$commit"
row c3-dirtree-char-device install "rm update/$dirtree && mknod update/$dirtree c 1 5"
row c3-config-sparse-20G install "truncate -s 20G update/ostree_repo/config"
row c3-dirtree-sparse-20G install "truncate -s 20G update/$dirtree"
row c3-filez-sparse-20G install "truncate -s 20G update/$filez"
row "c8-bomb-declares-1M-inflates-${bomb_gib}G" install \
  "bomb update/$filez 1048576 $((bomb_gib << 30))"
row "c8-bomb-declares-${bomb_gib}G" install \
  "bomb update/$filez $((bomb_gib << 30)) $((bomb_gib << 30))"
row "c9-root-${root_entries}-entries" agent \
  "seq -f 'f%.0f' 1 $root_entries | xargs touch"
