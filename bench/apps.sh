#!/usr/bin/env bash
# `usb-update install` of an apps-only update (three apps with about 1 GB of image layers)
# on an ostree+compose_apps device, next to loading the same images as `docker save`
# tarballs (POST /images/load, what `docker load` does) into the same engine, and next to
# `sha256sum` over the same blobs (the floor), in the same run. The engine is a private
# dockerd of this script, never the machine's. Prints the times, ratios and our peak memory
# (goals: within 1.2x of the slower baseline, peak memory under 40 MB).
# Sizes: APPS, LAYER_BYTES (the extra layer of each app, incompressible).
set -euo pipefail
cd "$(dirname "$0")/.."
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
sota_toml "$work/conf/sota.toml" "$work/sysroot" "$work/var" "$work/tuf" ostree+compose_apps
printf '[agent]\nlock_file = "%s/aklite.lock"\n' "$work" >"$work/policy/p.toml"

# The baseline's input: each image as a `docker save` tar (manifest.json, the config, the
# gzip'd layers as they are in the bundle), built from the bundle's blobs.
mapfile -t ids < <(docker_save_tars "$work/bundle" "$work/tars")

dockerd_start "$work/docker" usbu-bench
no_images() {
  local n
  n=$(api http://d/images/json | jq length)
  [ "$n" = 0 ] || { echo "the engine holds $n image(s) before $1" >&2; exit 1; }
}

# The floor: reading and hashing every blob once.
drop_caches
start=$(now)
sha256sum "$blobs"/* >/dev/null
floor=$(since "$start")

# Ours: verify, copy the blobs into the store hashing them, load the images.
no_images "our install"
drop_caches
start=$(now)
code=0
DOCKER_HOST=unix://$sock /usr/bin/time -f %M -o "$work/rss" \
  "$bin" install -c "$work/conf" -p "$work/policy" --src-dir "$work/bundle" \
  >"$work/out" 2>"$work/err" || code=$?
ours=$(since "$start")
if [ "$code" != 101 ]; then
  echo "install returned $code, expected 101 (apps only):" >&2
  cat "$work/out" "$work/err" >&2
  exit 1
fi
loaded=$(api http://d/images/json | jq length)
[ "$loaded" = "${#ids[@]}" ] || { echo "the engine holds $loaded images after our install, expected ${#ids[@]}" >&2; exit 1; }

# The baseline: the same images loaded from the tarballs, one after the other.
for id in "${ids[@]}"; do api -X DELETE "http://d/images/$id?force=1" >/dev/null; done
no_images "the baseline's load"
drop_caches
start=$(now)
for tar in "$work"/tars/*.tar; do
  api -X POST -H 'Content-Type: application/x-tar' -H 'Expect:' --upload-file "$tar" \
    'http://d/images/load?quiet=1' >"$work/load.out"
  if grep -q errorDetail "$work/load.out"; then cat "$work/load.out" >&2; exit 1; fi
done
load=$(since "$start")
loaded=$(api http://d/images/json | jq length)
[ "$loaded" = "${#ids[@]}" ] || { echo "the engine holds $loaded images after the load, expected ${#ids[@]}" >&2; exit 1; }
dockerd_stop

rss_mb=$(echo "$(tail -1 "$work/rss") / 1024" | bc -l)
slower=$(echo "if ($load > $floor) $load else $floor" | bc -l)
ratio=$(echo "$ours / $slower" | bc -l)
row() { # label seconds
  printf '%-54s %8.2f %8.1f %9.2f\n' "$1" "$2" "$(echo "$bytes / $2 / 1000000" | bc -l)" \
    "$(echo "$2 / $floor" | bc -l)"
}
printf '%-54s %8s %8s %9s\n' "" "seconds" "MB/s" "x floor"
row "sha256sum of the blobs (floor)" "$floor"
row "POST /images/load of ${#ids[@]} docker-save tars (docker load)" "$load"
row "usb-update install (verify, copy, load; exit $code)" "$ours"
verdict() { if [ "$(echo "$1" | bc -l)" = 1 ]; then echo met; else echo missed; fi; }
printf 'ours / slower baseline: %.2f (goal <= 1.2: %s); peak RSS %.1f MB (goal < 40: %s)\n' \
  "$ratio" "$(verdict "$ratio <= 1.2")" "$rss_mb" "$(verdict "$rss_mb < 40")"
printf '%d bytes in %d blobs (%d apps, %d-byte layers); machine: %d cores, %s\n' \
  "$bytes" "$(find "$blobs" -type f | wc -l)" "$apps" "$layer_bytes" "$(nproc)" "$(uname -r)"
