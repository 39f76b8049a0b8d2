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
. bench/lib.sh
trap bench_cleanup EXIT
bench_build

# The device's image: version 1; the bundle: version 2 plus the bulk files.
"$make_bundle" --out "$work/image" --version 1 \
  --device-root-dir "$work/tuf" >/dev/null
start=$(now)
"$make_bundle" --out "$work/bundle" --version 2 \
  --bulk-files "$files" --bulk-bytes "$bytes" >/dev/null
echo "generated the bundle in $(since "$start") s: $(du -sh "$work/bundle/ostree_repo" | cut -f1) ostree_repo"
v1=$(ostree --repo="$work/image/ostree_repo" rev-parse intel-corei7-64-lmp)
v2=$(ostree --repo="$work/bundle/ostree_repo" rev-parse intel-corei7-64-lmp)

sysroot "$work/ours" "$work/image/ostree_repo" "$v1"
sysroot "$work/cli" "$work/image/ostree_repo" "$v1"
drop_caches

mkdir -p "$work/policy"
sota_toml "$work/conf/sota.toml" "$work/ours" "$work/var" "$work/tuf" ostree
printf '[agent]\nlock_file = "%s/aklite.lock"\n' "$work" >"$work/policy/p.toml"

start=$(now)
/usr/bin/time -f "%M" -o "$work/rss" "$bin" install -c "$work/conf" -p "$work/policy" --src-dir "$work/bundle" >"$work/out" || true
ours=$(since "$start")
code=$(awk '/^install returned/ {print $3}' "$work/out")
drop_caches
start=$(now)
ostree --repo="$work/cli/ostree/repo" pull-local --untrusted "$work/bundle/ostree_repo" "$v2" >/dev/null
ostree admin deploy --sysroot="$work/cli" --os=lmp "$v2" >/dev/null
cli=$(since "$start")

printf '%-46s %8s\n' "" "seconds"
printf '%-46s %8.2f   (exit %s, peak RSS %.1f MB)\n' "usb-update install (verify, pull, deploy)" "$ours" "$code" "$(echo "$(tail -1 "$work/rss") / 1024" | bc -l)"
printf '%-46s %8.2f\n' "ostree pull-local --untrusted + admin deploy" "$cli"
printf 'ratio %.2f (goal <= 1.1); %d files, %d bytes; machine: %d cores, %s\n' \
  "$(echo "$ours / $cli" | bc -l)" "$files" "$bytes" "$(nproc)" "$(uname -r)"
