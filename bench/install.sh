#!/usr/bin/env bash
# `usb-update install` of a commit of about 500 MB in 20,000 files, next to
# `ostree pull-local --untrusted` + `ostree admin deploy` of the same commit into an
# identical sysroot, in the same run. Prints both times, their ratio and our peak memory
# (goals: ratio at most 1.1, peak memory under 40 MB). Sizes: FILES, BYTES.
set -euo pipefail
cd "$(dirname "$0")/.."
files=${FILES:-20000}
bytes=${BYTES:-500000000}
work=$(mktemp -d /var/tmp/usb-update-bench.XXXXXX)
cleanup() { chattr -R -f -i "$work" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

cargo build --release --quiet --bin usb-update --example make-bundle
bin=$PWD/target/release/usb-update

# The device's image: version 1; the bundle: version 2 plus the bulk files.
target/release/examples/make-bundle --out "$work/image" --version 1 \
  --device-root-dir "$work/tuf" >/dev/null
start=$(date +%s.%N)
target/release/examples/make-bundle --out "$work/bundle" --version 2 \
  --bulk-files "$files" --bulk-bytes "$bytes" >/dev/null
echo "generated the bundle in $(echo "$(date +%s.%N) - $start" | bc) s: $(du -sh "$work/bundle/ostree_repo" | cut -f1) ostree_repo"
v1=$(ostree --repo="$work/image/ostree_repo" rev-parse intel-corei7-64-lmp)
v2=$(ostree --repo="$work/bundle/ostree_repo" rev-parse intel-corei7-64-lmp)

sysroot() { # dir: a sysroot running v1
  mkdir -p "$1"
  ostree admin init-fs --modern "$1" >/dev/null 2>&1
  ostree admin os-init --sysroot="$1" lmp >/dev/null
  ostree config --repo="$1/ostree/repo" set sysroot.bootloader none
  ostree --repo="$1/ostree/repo" pull-local --untrusted "$work/image/ostree_repo" "$v1" >/dev/null
  ostree admin deploy --sysroot="$1" --os=lmp "$v1" >/dev/null
}
sysroot "$work/ours"
sysroot "$work/cli"
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true

mkdir -p "$work/conf" "$work/policy" "$work/var"
cat >"$work/conf/sota.toml" <<TOML
[provision]
primary_ecu_hardware_id = "intel-corei7-64"
[pacman]
type = "ostree"
sysroot = "$work/ours"
booted = "staged"
tags = "devel"
[storage]
path = "$work/var"
uptane_metadata_path = "$work/tuf"
TOML
printf '[agent]\nlock_file = "%s/aklite.lock"\n' "$work" >"$work/policy/p.toml"

start=$(date +%s.%N)
/usr/bin/time -f "%M" -o "$work/rss" "$bin" install -c "$work/conf" -p "$work/policy" --src-dir "$work/bundle" >"$work/out" || true
ours=$(echo "$(date +%s.%N) - $start" | bc)
code=$(awk '/^install returned/ {print $3}' "$work/out")
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
start=$(date +%s.%N)
ostree --repo="$work/cli/ostree/repo" pull-local --untrusted "$work/bundle/ostree_repo" "$v2" >/dev/null
ostree admin deploy --sysroot="$work/cli" --os=lmp "$v2" >/dev/null
cli=$(echo "$(date +%s.%N) - $start" | bc)

printf '%-46s %8s\n' "" "seconds"
printf '%-46s %8.2f   (exit %s, peak RSS %.1f MB)\n' "usb-update install (verify, pull, deploy)" "$ours" "$code" "$(echo "$(tail -1 "$work/rss") / 1024" | bc -l)"
printf '%-46s %8.2f\n' "ostree pull-local --untrusted + admin deploy" "$cli"
printf 'ratio %.2f (goal <= 1.1); %d files, %d bytes; machine: %d cores, %s\n' \
  "$(echo "$ours / $cli" | bc -l)" "$files" "$bytes" "$(nproc)" "$(uname -r)"
