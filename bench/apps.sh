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
sock=$work/docker.sock
dpid=
stop_dockerd() {
  [ -n "$dpid" ] || return 0
  kill -TERM "$dpid" 2>/dev/null || true
  for _ in $(seq 200); do kill -0 "$dpid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$dpid" 2>/dev/null || true
  wait "$dpid" 2>/dev/null || true
  dpid=
}
cleanup() {
  stop_dockerd
  # Whatever dockerd left mounted under the work directory (layers, shm, netns), deepest first.
  awk -v w="$work/" 'index($2, w) == 1 {print $2}' /proc/self/mounts | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  chattr -R -f -i "$work" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
api() { curl -sS --fail --unix-socket "$sock" "$@"; }

cargo build --release --quiet --bin usb-update --example make-bundle
bin=$PWD/target/release/usb-update

# The device's image: version 1, no apps. The bundle: version 2 on the same rootfs commit
# (targets.json lists version 1 too, so the device knows it runs 1) with the apps: an
# apps-only update, so the OSTree pull does not enter the figures.
target/release/examples/make-bundle --out "$work/image" --version 1 \
  --device-root-dir "$work/tuf" >/dev/null
start=$(now)
target/release/examples/make-bundle --out "$work/bundle" --version 2 --rootfs-version 1 \
  --apps "$apps" --app-layer-bytes "$layer_bytes" >/dev/null
blobs=$work/bundle/apps/blobs/sha256
bytes=$(find "$blobs" -type f -printf '%s\n' | awk '{s += $1} END {print s}')
printf "generated the bundle in %.1f s: %s\n" "$(since "$start")" "$apps apps, $(find "$blobs" -type f | wc -l) blobs, $bytes bytes"
v1=$(ostree --repo="$work/image/ostree_repo" rev-parse intel-corei7-64-lmp)
v2=$(ostree --repo="$work/bundle/ostree_repo" rev-parse intel-corei7-64-lmp)
[ "$v1" = "$v2" ] || { echo "the bundle's commit $v2 is not the device's $v1" >&2; exit 1; }

mkdir -p "$work/sysroot"
ostree admin init-fs --modern "$work/sysroot" >/dev/null 2>&1
ostree admin os-init --sysroot="$work/sysroot" lmp >/dev/null
ostree config --repo="$work/sysroot/ostree/repo" set sysroot.bootloader none
ostree --repo="$work/sysroot/ostree/repo" pull-local --untrusted "$work/image/ostree_repo" "$v1" >/dev/null
ostree admin deploy --sysroot="$work/sysroot" --os=lmp "$v1" >/dev/null

mkdir -p "$work/conf" "$work/policy" "$work/var"
cat >"$work/conf/sota.toml" <<TOML
[provision]
primary_ecu_hardware_id = "intel-corei7-64"
[pacman]
type = "ostree+compose_apps"
sysroot = "$work/sysroot"
booted = "staged"
tags = "devel"
reset_apps_root = "$work/var/reset-apps"
compose_apps_root = "$work/var/compose-apps"
[storage]
path = "$work/var"
uptane_metadata_path = "$work/tuf"
TOML
printf '[agent]\nlock_file = "%s/aklite.lock"\n' "$work" >"$work/policy/p.toml"

# The baseline's input: each image as a `docker save` tar (manifest.json, the config, the
# gzip'd layers as they are in the bundle), built from the bundle's blobs.
mkdir -p "$work/tars"
ids=()
for index in $(find "$work/bundle/apps/apps" -path '*/images/*' -name index.json | sort); do
  mhex=$(jq -r '.manifests[0].digest | sub("^sha256:"; "")' "$index")
  repo=${index#*/images/}
  repo=${repo%/"$mhex"/index.json}
  manifest=$blobs/$mhex
  chex=$(jq -r '.config.digest | sub("^sha256:"; "")' "$manifest")
  stage=$work/tars/$mhex
  mkdir -p "$stage"
  ln "$blobs/$chex" "$stage/$chex.json"
  layers=()
  i=0
  for lhex in $(jq -r '.layers[].digest | sub("^sha256:"; "")' "$manifest"); do
    mkdir -p "$stage/$i"
    ln "$blobs/$lhex" "$stage/$i/layer.tar"
    layers+=("$i/layer.tar")
    i=$((i + 1))
  done
  jq -cn --arg c "$chex.json" --arg t "$repo:${mhex:0:7}" --args \
    '[{Config: $c, RepoTags: [$t], Layers: $ARGS.positional}]' "${layers[@]}" >"$stage/manifest.json"
  tar -C "$stage" -cf "$work/tars/$mhex.tar" manifest.json "$chex.json" "${layers[@]%/layer.tar}"
  rm -rf "$stage"
  ids+=("sha256:$chex")
done

# A private engine: its own data and exec roots, socket, containerd namespaces; no
# bridge, no iptables rules.
dockerd --data-root "$work/docker" --exec-root "$work/dexec" --pidfile "$work/dpid" \
  -H "unix://$sock" --bridge none --iptables=false --ip6tables=false --ip-masq=false \
  --containerd-namespace usbu-bench --containerd-plugins-namespace usbu-bench-plugins \
  >"$work/dockerd.log" 2>&1 &
dpid=$!
for _ in $(seq 300); do
  curl -sf --unix-socket "$sock" http://d/_ping >/dev/null 2>&1 && break
  kill -0 "$dpid" 2>/dev/null || { tail -20 "$work/dockerd.log" >&2; exit 1; }
  sleep 0.1
done
api http://d/_ping >/dev/null
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
stop_dockerd

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
