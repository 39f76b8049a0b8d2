#!/usr/bin/env bash
# `usb-update install` of an apps-only update (three apps with about 1 GB of image layers)
# on an ostree+compose_apps device, next to loading the same images as `docker save`
# tarballs (POST /images/load, what `docker load` does) into the same engine, and next to
# `sha256sum` over the same blobs (the floor), in the same run: RUNS rounds (default 3) of
# the three in turn, each from cold caches and a fresh device and engine, the 1-minute load
# printed before each round. The engine is a private dockerd of this script, never the
# machine's. Prints the medians, the median of each round's ratio and our peak memory
# (goals: at most 1.0x docker load, peak memory under 40 MB). Sizes: APPS, LAYER_BYTES (the
# extra layer of each app, incompressible).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
apps=${APPS:-3}
layer_bytes=${LAYER_BYTES:-333333333}
work=$(mktemp -d /var/tmp/usb-update-bench-apps.XXXXXX)
. bench/lib.sh
trap bench_cleanup EXIT
bench_build

# The device's image: version 1, no apps. The bundle: version 2 on the same rootfs commit
# (targets.json lists version 1 too, so the device knows it runs 1) with the apps: an
# apps-only update, so the OSTree pull does not enter the figures.
"$make_bundle" --out "$work/image" --version 1 \
  --device-root-dir "$work/tuf" >/dev/null
start=$(now)
"$make_bundle" --out "$work/bundle" --version 2 --rootfs-version 1 \
  --apps "$apps" --app-layer-bytes "$layer_bytes" >/dev/null
blobs=$work/bundle/apps/blobs/sha256
bytes=$(find "$blobs" -type f -printf '%s\n' | awk '{s += $1} END {print s}')
printf "generated the bundle in %.1f s: %s\n" "$(since "$start")" "$apps apps, $(find "$blobs" -type f | wc -l) blobs, $bytes bytes"
v1=$(ostree --repo="$work/image/ostree_repo" rev-parse intel-corei7-64-lmp)
v2=$(ostree --repo="$work/bundle/ostree_repo" rev-parse intel-corei7-64-lmp)
[ "$v1" = "$v2" ] || { echo "the bundle's commit $v2 is not the device's $v1" >&2; exit 1; }

sysroot "$work/sysroot" "$work/image/ostree_repo" "$v1"
mkdir -p "$work/policy"
printf '[agent]\nlock_file = "%s/aklite.lock"\n' "$work" >"$work/policy/p.toml"

# The baseline's input: each image as a `docker save` tar (manifest.json, the config, the
# gzip'd layers as they are in the bundle), built from the bundle's blobs.
mapfile -t ids < <(docker_save_tars "$work/bundle" "$work/tars")

dockerd_start "$work/docker" usbu-bench
images() { api http://d/images/json | jq length; }

# One round: the floor (reading and hashing every blob once), ours (verify, copy the blobs
# into the store hashing them, load the images) on a device that has none of the apps yet,
# the baseline (the same images from the tarballs, one after the other).
declare -a floor ours load rss
round() {
  local start code=0 tar
  quiet_or_mark "round $1"
  echo "round $1: 1-minute load $(load1), $quiet"
  drop_caches
  start=$(now)
  sha256sum "$blobs"/* >/dev/null
  floor[$1]=$(since "$start")

  engine_reset
  rm -rf "$work/var"
  sota_toml "$work/conf/sota.toml" "$work/sysroot" "$work/var" "$work/tuf" ostree+compose_apps
  drop_caches
  start=$(now)
  /usr/bin/time -f %M -o "$work/rss" \
    "$bin" install -c "$work/conf" -p "$work/policy" --src-dir "$work/bundle" \
    >"$work/out" 2>"$work/err" || code=$?
  ours[$1]=$(since "$start")
  rss[$1]=$(tail -1 "$work/rss")
  if [ "$code" != 101 ]; then
    echo "install returned $code, expected 101 (apps only):" >&2
    cat "$work/out" "$work/err" >&2
    exit 1
  fi
  [ "$(images)" = "${#ids[@]}" ] || { echo "the engine holds $(images) images after our install, expected ${#ids[@]}" >&2; exit 1; }

  engine_reset
  drop_caches
  start=$(now)
  for tar in "$work"/tars/*.tar; do
    api -X POST -H 'Content-Type: application/x-tar' -H 'Expect:' --upload-file "$tar" \
      'http://d/images/load?quiet=1' >"$work/load.out"
    if grep -q errorDetail "$work/load.out"; then cat "$work/load.out" >&2; exit 1; fi
  done
  load[$1]=$(since "$start")
  [ "$(images)" = "${#ids[@]}" ] || { echo "the engine holds $(images) images after the load, expected ${#ids[@]}" >&2; exit 1; }
}
for r in $(seq "$runs"); do round "$r"; done
echo "after the last round: 1-minute load $(load1)"
dockerd_stop

ratios() { # A B: each round's A / B
  local -n a=$1 b=$2
  local r
  for r in $(seq "$runs"); do echo "${a[$r]} / ${b[$r]}" | bc -l; done
}
row() { # label seconds
  printf '%-54s %8.2f %8.1f %9.2f\n' "$1" "$2" "$(echo "$bytes / $2 / 1000000" | bc -l)" \
    "$(echo "$2 / $(median "${floor[@]}")" | bc -l)"
}
printf '%-54s %8s %8s %9s   (medians of %d rounds)\n' "" "seconds" "MB/s" "x floor" "$runs"
row "sha256sum of the blobs (floor)" "$(median "${floor[@]}")"
row "POST /images/load of ${#ids[@]} docker-save tars (docker load)" "$(median "${load[@]}")"
row "usb-update install (verify, copy, load; exit 101)" "$(median "${ours[@]}")"
x=$(median $(ratios ours load))
rss_mb=$(echo "$(median "${rss[@]}") / 1024" | bc -l)
printf 'ours / docker load: %.2f (each round: %s; goal <= 1.0: %s); ours / floor: %.2f; peak RSS %.1f MB (goal < 40: %s)\n' \
  "$x" "$(ratios ours load | xargs printf '%.2f ')" "$(verdict "$x <= 1.0")" "$(median $(ratios ours floor))" \
  "$rss_mb" "$(verdict "$rss_mb < 40")"
printf '%d bytes in %d blobs (%d apps, %d-byte layers); machine: %d cores, %s\n' \
  "$bytes" "$(find "$blobs" -type f | wc -l)" "$apps" "$layer_bytes" "$(nproc)" "$(uname -r)"
