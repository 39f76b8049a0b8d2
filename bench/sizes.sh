#!/usr/bin/env bash
# The three-size benchmark (docs/benchmarks.md): for each size, a bundle (version 2: a rootfs commit
# with many small files, and three apps whose images carry incompressible layers) on an
# ext4 stick image, installed onto a fresh sandboxed device running version 1 (an OSTree
# sysroot, a private dockerd), next to baselines on the same data, in the same run:
#
#   floor    sha256sum over every byte of the bundle;
#   CLI      `ostree pull-local --untrusted` + `ostree admin deploy`; `docker load` of the
#            same images as tarballs; `docker-compose up -d` until healthy (timed inside
#            the by-hand script, where it follows the load as our compose-up follows ours);
#   by hand  bench/by-hand.sh: mount, verify nothing, pull, deploy, load, up;
#   ours     `usb-update install` (100), the reboot simulated, `usb-update run` (0); the
#            phases are our own figures (the `usb_update::phase` log events).
#
# The page cache is dropped before each step. Peak memory: GNU time's maximum RSS of the
# step's process tree (for `run` that includes docker-compose, a Python program), and for
# our two commands also our own process's VmHWM, sampled every 50 ms.
#
# SIZES: bundle sizes in MB (default "100 1000 3000"); half of it is the rootfs (files of
# about 25 KB), half the apps. BENCH_DIR: scratch (default tmp-bench in the clone). Each
# size's data is deleted before the next. BENCH_STICKS: a directory where each size's stick
# image and device image are kept and reused (generating 3 GB takes minutes). BENCH_LOG: our log filter (default warn; the phase
# events are always on); BENCH_LOGS: a directory to keep our logs in. Prints one table per
# size and the goals' verdicts.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=${SIZES:-100 1000 3000}
mkdir -p "${BENCH_DIR:-$PWD/tmp-bench}"
work=$(mktemp -d "${BENCH_DIR:-$PWD/tmp-bench}/sizes.XXXXXX")
. bench/lib.sh
trap bench_cleanup EXIT
bench_build
export NO_COLOR=1

# measure KEY CMD...: runs CMD (stdout, stderr to $work/KEY.out, .err), sets secs[KEY],
# tree[KEY] (kB, GNU time), own[KEY] (kB, VmHWM of CMD itself) and code.
declare -A secs tree own bytes_of
measure() {
  local key=$1 tpid cpid= hwm=0 k v
  shift
  /usr/bin/time -f '%e %M' -o "$work/$key.time" "$@" >"$work/$key.out" 2>"$work/$key.err" &
  tpid=$!
  while kill -0 "$tpid" 2>/dev/null; do
    [ -n "$cpid" ] || cpid=$(pgrep -P "$tpid" | head -1 || true)
    if [ -n "$cpid" ]; then
      { while read -r k v _; do [ "$k" = VmHWM: ] && hwm=$v; done <"/proc/$cpid/status"; } 2>/dev/null || true
    fi
    sleep 0.05
  done
  code=0
  wait "$tpid" || code=$?
  read -r secs[$key] tree[$key] < <(grep -E '^[0-9.]+ [0-9]+$' "$work/$key.time" | tail -1)
  # A process shorter than one sample: GNU time's figure (it has no children here).
  [ "$hwm" != 0 ] || hwm=${tree[$key]}
  own[$key]=$hwm
}
# phases KEY: our phase events in KEY's log, summed per name, as `name ms` lines.
phases() {
  sed "s/\x1b\[[0-9;]*m//g" "$work/$1.err" | grep -o 'phase="[^"]*" ms=[0-9.]*' |
    awk -F'[" =]+' '{ms[$2] += $4} END {for (p in ms) print p, ms[p]}'
}

lscpu_model=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
echo "machine: $lscpu_model, $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
dockerd_start "$work/docker" usbu-bench-sizes

for size in $sizes; do
  s=$work/$size
  mkdir -p "$s"
  rootfs_bytes=$((size * 1000000 / 2))
  files=$((rootfs_bytes / 25000))
  layer=$((size * 1000000 / 6))
  start=$(now)
  # The stick: an ext4 image holding the bundle and, for the baselines, the same images
  # as docker-save tarballs; with BENCH_STICKS, made once and kept there for later runs.
  keep=${BENCH_STICKS:-$s}
  img=$keep/stick-$size.img image=$keep/image-$size
  if [ ! -e "$image/done" ]; then
    mkdir -p "$keep"
    rm -rf "$image" "$img"
    "$make_bundle" --out "$image/bundle" --version 1 --device-root-dir "$image/tuf" >/dev/null
    truncate -s "$((size * 17 / 10 + 160))M" "$img"
    mkfs.ext4 -q -F -L UPDATE "$img"
    mkdir -p "$s/stick"
    mount_stick "$img" "$s/stick"
    "$make_bundle" --out "$s/stick/bundle" --version 2 --apps 3 --app-layer-bytes "$layer" \
      --bulk-files "$files" --bulk-bytes "$rootfs_bytes" >/dev/null
    docker_save_tars "$s/stick/bundle" "$s/stick/tars" >/dev/null
    umount "$s/stick"
    touch "$image/done"
  fi
  mkdir -p "$s/stick"
  ln -sfn "$image/bundle" "$s/image"
  ln -sfn "$image/tuf" "$s/tuf"
  ln -sf "$img" "$s/stick.img"
  mount_stick "$img" "$s/stick" ro
  v1=$(ostree --repo="$s/image/ostree_repo" rev-parse intel-corei7-64-lmp)
  bundle=$s/stick/bundle
  v2=$(ostree --repo="$bundle/ostree_repo" rev-parse intel-corei7-64-lmp)
  total=$(find "$bundle" -type f -printf '%s\n' | awk '{s += $1} END {printf "%.0f\n", s}')
  rootfs=$(find "$bundle/ostree_repo" -type f -printf '%s\n' | awk '{s += $1} END {printf "%.0f\n", s}')
  appbytes=$(find "$bundle/apps" -type f -printf '%s\n' | awk '{s += $1} END {printf "%.0f\n", s}')
  nfiles=$(find "$bundle" -type f | wc -l)
  printf '\n== %s MB: bundle of %d bytes in %d files (rootfs %d bytes: %d files of the commit; apps %d bytes), made or found in %.0f s; load %s\n' \
    "$size" "$total" "$nfiles" "$rootfs" "$files" "$appbytes" "$(since "$start")" "$(cut -d' ' -f1-3 /proc/loadavg)"

  # The floor.
  drop_caches
  measure floor sh -c 'find "$1" -type f -print0 | xargs -0 sha256sum >/dev/null' - "$bundle"

  # CLI: the rootfs, then the apps.
  sysroot "$s/cli" "$s/image/ostree_repo" "$v1"
  drop_caches
  measure cli-pull ostree --repo="$s/cli/ostree/repo" pull-local --untrusted "$bundle/ostree_repo" "$v2"
  measure cli-deploy ostree admin deploy --sysroot="$s/cli" --os=lmp "$v2"
  chattr -R -f -i "$s/cli" 2>/dev/null || true
  rm -rf "$s/cli"
  drop_caches
  measure cli-load sh -c 'for t in "$1"/*.tar; do docker load -q -i "$t" >/dev/null || exit 1; done' - "$s/stick/tars"
  [ "$code" = 0 ] || { cat "$work/cli-load.err" >&2; exit 1; }
  engine_reset

  # By hand, on a fresh device.
  sysroot "$s/hand" "$s/image/ostree_repo" "$v1"
  umount "$s/stick"
  drop_caches
  measure hand bash bench/by-hand.sh "$s/stick.img" "$s/stick" "$s/hand" "$s/hand-apps"
  [ "$code" = 0 ] || { cat "$work/hand.err" >&2; exit 1; }
  declare -A hand_step=()
  while read -r _ name t; do hand_step[$name]=$t; done <"$work/hand.out"
  engine_reset
  chattr -R -f -i "$s/hand" 2>/dev/null || true
  rm -rf "$s/hand" "$s/hand-apps"
  mount_stick "$s/stick.img" "$s/stick" ro

  # Ours, on a fresh device: install, the reboot simulated, run.
  sysroot "$s/ours" "$s/image/ostree_repo" "$v1"
  sota_toml "$s/conf/sota.toml" "$s/ours" "$s/var" "$s/tuf" ostree+compose_apps simulated
  mkdir -p "$s/policy"
  printf '[agent]\nlock_file = "%s/aklite.lock"\n[apps]\nsettle = "0s"\n' "$s" >"$s/policy/p.toml"
  args=(-c "$s/conf" -p "$s/policy")
  export USB_UPDATE_LOG=${BENCH_LOG:-warn},usb_update::phase=info
  drop_caches
  measure check-cold "$bin" check "${args[@]}" --src-dir "$bundle"
  measure check "$bin" check "${args[@]}" --src-dir "$bundle"
  drop_caches
  measure install "$bin" install "${args[@]}" --src-dir "$bundle"
  [ "$code" = 100 ] || { echo "install returned $code, expected 100" >&2; cat "$work/install.out" "$work/install.err" >&2; exit 1; }
  mkdir -p "$s/ours/.usb-update-sim"
  echo "$v2" >"$s/ours/.usb-update-sim/booted"
  echo "sim-1" >"$s/ours/.usb-update-sim/boot_id"
  measure run "$bin" run "${args[@]}"
  [ "$code" = 0 ] || { echo "run returned $code, expected 0" >&2; cat "$work/run.out" "$work/run.err" >&2; exit 1; }
  unset USB_UPDATE_LOG
  declare -A ph=()
  while read -r name ms; do ph[$name]=$(echo "$ms / 1000" | bc -l); done < <(phases install; phases run)
  engine_reset
  umount "$s/stick"
  if [ -n "${BENCH_LOGS:-}" ]; then
    mkdir -p "$BENCH_LOGS"
    for f in install run hand; do cp "$work/$f.err" "$BENCH_LOGS/$size-$f.log"; done
  fi

  # The table.
  fl=${secs[floor]}
  mb() { echo "$1 / 1024" | bc -l; }
  row() { # label seconds bytes baseline-seconds peak-kB whose
    local rate=- xb=-
    [ "$3" = - ] || rate=$(printf '%.0f' "$(echo "$3 / $2 / 1000000" | bc -l)")
    [ "$4" = - ] || xb=$(printf '%.2f' "$(echo "$2 / $4" | bc -l)")
    local mem=-
    [ "$5" = - ] || mem=$(printf '%.1f %s' "$(mb "$5")" "$6")
    printf '| %-44s | %8.2f | %5s | %7.2f | %6s | %s |\n' "$1" "$2" "$rate" "$(echo "$2 / $fl" | bc -l)" "$xb" "$mem"
  }
  hsum() { local t=0 k; for k in "$@"; do t=$(echo "$t + ${hand_step[$k]:-0}" | bc -l); done; echo "$t"; }
  cli_apps=$(echo "${secs[cli-load]} + ${hand_step[up]}" | bc -l)
  install_phases=$(echo "${ph[verify]:-0} + ${ph[blob-copy]:-0} + ${ph[image-load]:-0} + ${ph[pull]:-0} + ${ph[deploy]:-0}" | bc -l)
  run_phases=$(echo "${ph[compose-up]:-0} + ${ph[finalize]:-0}" | bc -l)
  ours_total=$(echo "${secs[install]} + ${secs[run]}" | bc -l)
  copy_load=$(echo "${ph[blob-copy]} + ${ph[image-load]}" | bc -l)
  echo
  printf '| %-44s | %8s | %5s | %7s | %6s | %s |\n' step seconds "MB/s" "x floor" "x CLI" "peak RSS, MB (whose)"
  echo "|---|---:|---:|---:|---:|---|"
  row "floor: sha256sum of the bundle" "$fl" "$total" - "${tree[floor]}" "sha256sum"
  row "CLI: ostree pull-local --untrusted" "${secs[cli-pull]}" "$rootfs" - "${tree[cli-pull]}" "ostree"
  row "CLI: ostree admin deploy" "${secs[cli-deploy]}" - - "${tree[cli-deploy]}" "ostree"
  row "CLI: docker load (3 tarballs)" "${secs[cli-load]}" "$appbytes" - "${tree[cli-load]}" "docker client"
  row "CLI: docker-compose up -d, until healthy" "${hand_step[up]}" - - - ""
  row "by hand: mount, pull, deploy, load, up" "${secs[hand]}" "$total" - "${tree[hand]}" "largest command"
  row "ours: check (cold cache)" "${secs[check-cold]}" - - "${own[check-cold]}" "usb-update"
  row "ours: check (warm)" "${secs[check]}" - - "${own[check]}" "usb-update"
  row "ours: verify (TUF, apps' manifests)" "${ph[verify]}" - - - ""
  row "ours: blob-copy (hashed, fsynced)" "${ph[blob-copy]}" "$appbytes" - - ""
  row "ours: image-load" "${ph[image-load]}" - "${secs[cli-load]}" - ""
  row "ours: blob-copy + image-load" "$copy_load" "$appbytes" "${secs[cli-load]}" - ""
  row "ours: pull" "${ph[pull]}" "$rootfs" "${secs[cli-pull]}" - ""
  row "ours: deploy" "${ph[deploy]}" - "${secs[cli-deploy]}" - ""
  row "ours: install, other (lock, state, records)" "$(echo "${secs[install]} - $install_phases" | bc -l)" - - - ""
  row "ours: install" "${secs[install]}" "$total" - "${own[install]}" "usb-update"
  row "ours: compose-up (until healthy)" "${ph[compose-up]}" - "${hand_step[up]}" - ""
  row "ours: finalize (cleanup, prune)" "${ph[finalize]}" - - - ""
  row "ours: run" "${secs[run]}" - - "${own[run]}" "usb-update; $(printf '%.1f' "$(mb "${tree[run]}")") with docker-compose"
  row "ours: install + run (end to end)" "$ours_total" "$total" "${secs[hand]}" - ""
  echo
  e2e=$(echo "$ours_total / $fl" | bc -l)
  printf 'goal end to end <= 1.5x floor: %s (%.2f; by hand %.2f)\n' "$(verdict "$e2e <= 1.5")" "$e2e" "$(echo "${secs[hand]} / $fl" | bc -l)"
  for pair in "pull:${ph[pull]}:${secs[cli-pull]}" "deploy:${ph[deploy]}:${secs[cli-deploy]}" \
    "blob-copy + image-load:$copy_load:${secs[cli-load]}" "compose-up:${ph[compose-up]}:${hand_step[up]}"; do
    IFS=: read -r name a b <<<"$pair"
    x=$(echo "$a / $b" | bc -l)
    printf 'goal %s <= 1.1x CLI: %s (%.2f: %.2f s vs %.2f s)\n' "$name" "$(verdict "$x <= 1.1")" "$x" "$a" "$b"
  done
  for key in install run; do
    printf 'goal peak memory of %s < 40 MB: %s (%.1f MB)\n' "$key" "$(verdict "$(mb "${own[$key]}") < 40")" "$(mb "${own[$key]}")"
  done
  printf 'goal check < 100 ms: %s (%.0f ms warm, %.0f ms cold)\n' "$(verdict "${secs[check]} < 0.1")" \
    "$(echo "${secs[check]} * 1000" | bc -l)" "$(echo "${secs[check-cold]} * 1000" | bc -l)"
  echo "load after this size: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "$size ${own[install]} ${own[run]}" >>"$work/memory"

  chattr -R -f -i "$s" 2>/dev/null || true
  rm -rf "$s"
done

if [ "$(wc -l <"$work/memory")" -gt 1 ]; then
  echo
  awk '{printf "peak memory at %s MB: install %.1f MB, run %.1f MB\n", $1, $2/1024, $3/1024}' "$work/memory"
  awk 'NR == 1 {a = $2; b = $3} {la = $2; lb = $3} END {printf "growth from the smallest to the largest size: install %+.1f MB, run %+.1f MB (flat: within 2 MB)\n", (la - a)/1024, (lb - b)/1024}' "$work/memory"
fi
