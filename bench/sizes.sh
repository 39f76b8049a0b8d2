#!/usr/bin/env bash
# The size benchmark (docs/benchmarks.md): for each size, a bundle (version 2: a rootfs commit
# with many small files, and three apps whose images carry incompressible layers) on an
# ext4 stick image, installed onto a fresh sandboxed device running version 1 (an OSTree
# sysroot, a private dockerd), next to baselines on the same data, in the same run:
#
#   floor    sha256sum over every byte of the bundle;
#   floor with writes: the same read and hash, while what an install must keep is written
#            to the device's disk and synced: the bundle once (the rootfs objects and the
#            store's blobs), the apps' bytes once more (the engine's layers), as two plain
#            files; a bound no install on this disk can beat, since the stick shares it;
#   CLI      `ostree pull-local --untrusted` + `ostree admin deploy`; `docker load` of the
#            same images as tarballs; `docker-compose up -d` until healthy (timed inside
#            the by-hand script, where it follows the load as our compose-up follows ours);
#   by hand  bench/by-hand.sh: mount, verify nothing, pull, deploy, load, up;
#   ours     `usb-update install` (100), the reboot simulated, `usb-update run` (0); the
#            phases are our own figures (the `usb_update::phase` log events); and the same
#            install on a device without apps (`ostree` type), whose pull runs alone: the
#            ratio to `ostree pull-local` (the full install also copies and loads the apps).
#
# Each size is run RUNS times (default 3), the order of ours and the baselines alternating
# from one run to the next; every figure is the median over the runs, every ratio the
# median of the runs' ratios. The page cache is dropped before each step. The 1-minute
# load is printed before and after each size and run; before each run, above MAX_LOAD (1.5)
# the script waits up to BENCH_WAIT s (120) for it to fall, then marks the size NOT QUIET
# (BENCH_STRICT=1: refuses, exit 3). A size whose floor (the same read every run) varies by
# more than MAX_SPREAD % (15) of its median between runs is marked NOT STEADY: the host's
# disk changed speed, which the load does not show. Peak memory: GNU time's maximum RSS of the step's
# process tree (for `run` that includes docker-compose, a Python program), and for our
# commands our own process's VmHWM, sampled every 50 ms.
#
# SIZES: bundle sizes in MB, each optionally with its number of rootfs files as MB:FILES
# (default "100:2000 1000 3000 1000:100000": 2,000 to 100,000 files); half of it is the
# rootfs (files of about 25 KB unless FILES says), half the apps. BENCH_DIR: scratch
# (default tmp-bench in the clone). Each
# size's data is deleted before the next. BENCH_STICKS: a directory where each size's stick
# image and device image are kept and reused (generating 3 GB takes minutes). BENCH_LOG:
# our log filter (default warn; the phase events are always on); BENCH_LOGS: a directory to
# keep our logs in. RUNS=0 only makes the sticks (with BENCH_STICKS, for a later run).
# Prints one table per size and the goals' verdicts.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=${SIZES:-100:2000 1000 3000 1000:100000}
runs=${RUNS:-3}
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
echo "machine: $(hostname), $lscpu_model, $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r); $(date -u '+%Y-%m-%d %H:%M UTC'); load $(cut -d' ' -f1-3 /proc/loadavg); $runs runs per size"
dockerd_start "$work/docker" usbu-bench-sizes

# One run of each step for size $size, run number $r (keys KEY.$r).
run_floor() {
  drop_caches
  measure "floor.$r" sh -c 'find "$1" -type f -print0 | xargs -0 sha256sum >/dev/null' - "$bundle"
}
run_floorio() {
  rm -rf "$s/io"
  mkdir -p "$s/io"
  drop_caches
  measure "floorio.$r" sh -c 'cd "$1" && find . -type f -print0 | xargs -0 cat | tee "$2/bundle" |
    sha256sum >/dev/null && find apps -type f -print0 | xargs -0 cat >"$2/apps" && sync -f "$2/bundle"' - "$bundle" "$s/io"
  [ "$code" = 0 ] || { cat "$work/floorio.$r.err" >&2; exit 1; }
  rm -rf "$s/io"
}
run_cli() {
  sysroot "$s/cli" "$s/image/ostree_repo" "$v1"
  drop_caches
  measure "cli-pull.$r" ostree --repo="$s/cli/ostree/repo" pull-local --untrusted "$bundle/ostree_repo" "$v2"
  measure "cli-deploy.$r" ostree admin deploy --sysroot="$s/cli" --os=lmp "$v2"
  chattr -R -f -i "$s/cli" 2>/dev/null || true
  rm -rf "$s/cli"
  drop_caches
  measure "cli-load.$r" sh -c 'for t in "$1"/*.tar; do docker load -q -i "$t" >/dev/null || exit 1; done' - "$s/stick/tars"
  [ "$code" = 0 ] || { cat "$work/cli-load.$r.err" >&2; exit 1; }
  engine_reset
}
run_hand() {
  sysroot "$s/hand" "$s/image/ostree_repo" "$v1"
  umount "$s/stick"
  drop_caches
  measure "hand.$r" bash bench/by-hand.sh "$s/stick.img" "$s/stick" "$s/hand" "$s/hand-apps"
  [ "$code" = 0 ] || { cat "$work/hand.$r.err" >&2; exit 1; }
  while read -r _ name t; do secs[hand-$name.$r]=$t; done <"$work/hand.$r.out"
  engine_reset
  chattr -R -f -i "$s/hand" 2>/dev/null || true
  rm -rf "$s/hand" "$s/hand-apps"
  mount_stick "$s/stick.img" "$s/stick" ro
}
# ours_device DIR TYPE: a fresh device running version 1; sets args.
ours_device() {
  chattr -R -f -i "$1" 2>/dev/null || true
  rm -rf "$1"
  sysroot "$1/sysroot" "$s/image/ostree_repo" "$v1"
  sota_toml "$1/conf/sota.toml" "$1/sysroot" "$1/var" "$s/tuf" "$2" simulated
  mkdir -p "$1/policy"
  printf '[agent]\nlock_file = "%s/aklite.lock"\n[apps]\nsettle = "0s"\n' "$1" >"$1/policy/p.toml"
  args=(-c "$1/conf" -p "$1/policy")
}
run_ours() {
  export USB_UPDATE_LOG=${BENCH_LOG:-warn},usb_update::phase=info
  # The pull alone: a device without apps.
  ours_device "$s/alone" ostree
  drop_caches
  measure "alone.$r" "$bin" install "${args[@]}" --src-dir "$bundle"
  [ "$code" = 100 ] || { echo "install (no apps) returned $code" >&2; cat "$work/alone.$r.err" >&2; exit 1; }
  while read -r name ms; do secs[alone-$name.$r]=$(echo "$ms / 1000" | bc -l); done < <(phases "alone.$r")
  chattr -R -f -i "$s/alone" 2>/dev/null || true
  rm -rf "$s/alone"
  # The whole update: install, the reboot simulated, run.
  ours_device "$s/ours" ostree+compose_apps
  drop_caches
  measure "check-cold.$r" "$bin" check "${args[@]}" --src-dir "$bundle"
  measure "check.$r" "$bin" check "${args[@]}" --src-dir "$bundle"
  drop_caches
  measure "install.$r" "$bin" install "${args[@]}" --src-dir "$bundle"
  [ "$code" = 100 ] || { echo "install returned $code, expected 100" >&2; cat "$work/install.$r.out" "$work/install.$r.err" >&2; exit 1; }
  mkdir -p "$s/ours/sysroot/.usb-update-sim"
  echo "$v2" >"$s/ours/sysroot/.usb-update-sim/booted"
  echo "sim-1" >"$s/ours/sysroot/.usb-update-sim/boot_id"
  measure "run.$r" "$bin" run "${args[@]}"
  [ "$code" = 0 ] || { echo "run returned $code, expected 0" >&2; cat "$work/run.$r.out" "$work/run.$r.err" >&2; exit 1; }
  unset USB_UPDATE_LOG
  while read -r name ms; do secs[$name.$r]=$(echo "$ms / 1000" | bc -l); done < <(phases "install.$r"; phases "run.$r")
  engine_reset
  chattr -R -f -i "$s/ours" 2>/dev/null || true
  rm -rf "$s/ours"
}

# med TABLE KEY: the median over the runs of TABLE[KEY.r] (0 where a run has none).
med() {
  local -n t=$1
  local vals=() i
  for i in $(seq "$runs"); do vals+=("${t[$2.$i]:-0}"); done
  median "${vals[@]}"
}
# ratio A B: the median over the runs of secs[A.r] / secs[B.r] (A, B: keys or sums a+b).
ratio() {
  local vals=() i
  for i in $(seq "$runs"); do vals+=("$(echo "$(sum "$1" "$i") / $(sum "$2" "$i")" | bc -l)"); done
  median "${vals[@]}"
}
sum() { # KEYS(a+b) RUN
  local t=0 k
  for k in ${1//+/ }; do t=$(echo "$t + ${secs[$k.$2]:-0}" | bc -l); done
  echo "$t"
}

for spec in $sizes; do
  size=${spec%%:*}
  s=$work/$size
  mkdir -p "$s"
  rootfs_bytes=$((size * 1000000 / 2))
  files=$((rootfs_bytes / 25000))
  [ "$spec" = "$size" ] || files=${spec#*:}
  label="$size MB, $files files"
  layer=$((size * 1000000 / 6))
  start=$(now)
  # The stick: an ext4 image holding the bundle and, for the baselines, the same images
  # as docker-save tarballs; with BENCH_STICKS, made once and kept there for later runs.
  keep=${BENCH_STICKS:-$s}
  img=$keep/stick-$size-$files.img image=$keep/image-$size-$files
  if [ ! -e "$image/done" ]; then
    mkdir -p "$keep"
    rm -rf "$image" "$img"
    "$make_bundle" --out "$image/bundle" --version 1 --device-root-dir "$image/tuf" >/dev/null
    # Room for the data twice over (the tarballs), the rootfs's source tree that the
    # generator commits from (on the stick, removed after), and many small files' blocks.
    truncate -s "$((size * 25 / 10 + 300 + files * 12 / 1000))M" "$img"
    mkfs.ext4 -q -F -N "$((files * 3 + 20000))" -L UPDATE "$img"
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
  printf '\n== %s: bundle of %d bytes in %d files (rootfs %d bytes: %d files of the commit; apps %d bytes), made or found in %.0f s\n' \
    "$label" "$total" "$nfiles" "$rootfs" "$files" "$appbytes" "$(since "$start")"
  if [ "$runs" = 0 ]; then
    umount "$s/stick"
    rm -rf "$s"
    continue
  fi
  load_before=$(cut -d' ' -f1-3 /proc/loadavg)
  echo "load before $label: $load_before"
  size_quiet=quiet
  for r in $(seq "$runs"); do
    # Each run starts on a quiet machine: the runs themselves load it (2 cores, dockerd),
    # so the load is let fall again before the next one.
    quiet_or_mark "$label, run $r"
    [ "$quiet" = quiet ] || size_quiet="NOT QUIET"
    echo "run $r of $runs starts, load $(cut -d' ' -f1-3 /proc/loadavg)"
    # Alternate: the baselines first in odd runs, ours first in even ones.
    if [ $((r % 2)) = 1 ]; then order="floor floorio cli hand ours"; else order="ours hand cli floorio floor"; fi
    for step in $order; do "run_$step"; done
    if [ -n "${BENCH_LOGS:-}" ]; then
      mkdir -p "$BENCH_LOGS"
      for f in install run hand alone; do cp "$work/$f.$r.err" "$BENCH_LOGS/$size-$r-$f.log"; done
    fi
    echo "run $r of $runs done, load $(cut -d' ' -f1-3 /proc/loadavg)"
  done
  quiet=$size_quiet
  # The load average does not see the host's disk changing speed under a VM: the floor
  # (the same read each run) does. A size whose floor varies by more than MAX_SPREAD
  # (default 15 %) of its median between runs is marked, its figures do not count.
  fls=()
  for i in $(seq "$runs"); do fls+=("${secs[floor.$i]}"); done
  spread=$(printf '%s\n' "${fls[@]}" | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {print hi - lo}')
  spread=$(echo "100 * $spread / $(median "${fls[@]}")" | bc -l)
  printf 'floor in each run: %s s; spread %.0f %% of the median\n' "$(printf '%.2f ' "${fls[@]}")" "$spread"
  if [ "$(echo "$spread > ${MAX_SPREAD:-15}" | bc -l)" = 1 ]; then
    echo "*** NOT STEADY: the floor varied by more than ${MAX_SPREAD:-15} % between runs (the disk changed speed): these figures do not count ***"
    quiet="$quiet, NOT STEADY"
  fi
  umount "$s/stick"
  load_after=$(cut -d' ' -f1-3 /proc/loadavg)

  # The table: medians over the runs.
  fl=$(med secs floor)
  mb() { echo "$1 / 1024" | bc -l; }
  row() { # label seconds bytes x-CLI peak-kB whose
    local rate=- xb=-
    [ "$3" = - ] || rate=$(printf '%.0f' "$(echo "$3 / $2 / 1000000" | bc -l)")
    [ "$4" = - ] || xb=$(printf '%.2f' "$4")
    local mem=-
    [ "$5" = - ] || mem=$(printf '%.1f %s' "$(mb "$5")" "$6")
    printf '| %-48s | %8.2f | %5s | %7.2f | %6s | %s |\n' "$1" "$2" "$rate" "$(echo "$2 / $fl" | bc -l)" "$xb" "$mem"
  }
  echo
  echo "### $label: medians of $runs runs; load $load_before before, $load_after after ($quiet)"
  echo
  printf '| %-48s | %8s | %5s | %7s | %6s | %s |\n' step seconds "MB/s" "x floor" "x CLI" "peak RSS, MB (whose)"
  echo "|---|---:|---:|---:|---:|---|"
  row "floor: sha256sum of the bundle" "$fl" "$total" - "$(med tree floor)" "sha256sum"
  row "floor with writes: bundle + apps again, synced" "$(med secs floorio)" "$total" - "$(med tree floorio)" "largest command"
  row "CLI: ostree pull-local --untrusted" "$(med secs cli-pull)" "$rootfs" - "$(med tree cli-pull)" "ostree"
  row "CLI: ostree admin deploy" "$(med secs cli-deploy)" - - "$(med tree cli-deploy)" "ostree"
  row "CLI: docker load (3 tarballs)" "$(med secs cli-load)" "$appbytes" - "$(med tree cli-load)" "docker client"
  row "CLI: docker-compose up -d, until healthy" "$(med secs hand-up)" - - - ""
  row "by hand: mount, pull, deploy, load, up" "$(med secs hand)" "$total" - "$(med tree hand)" "largest command"
  row "ours: check (cold cache)" "$(med secs check-cold)" - - "$(med own check-cold)" "usb-update"
  row "ours: check (warm)" "$(med secs check)" - - "$(med own check)" "usb-update"
  row "ours, no apps: pull alone" "$(med secs alone-pull)" "$rootfs" "$(ratio alone-pull cli-pull)" - ""
  row "ours, no apps: install" "$(med secs alone)" "$rootfs" "$(ratio alone cli-pull+cli-deploy)" "$(med own alone)" "usb-update"
  row "ours: verify (TUF, apps' manifests)" "$(med secs verify)" - - - ""
  row "ours: blob-copy" "$(med secs blob-copy)" "$appbytes" - - ""
  row "ours: image-load" "$(med secs image-load)" - - - ""
  row "ours: blob-copy + image-load" "$(echo "$(med secs blob-copy) + $(med secs image-load)" | bc -l)" "$appbytes" - - ""
  row "ours: pull" "$(med secs pull)" "$rootfs" "$(ratio pull cli-pull)" - ""
  row "ours: deploy" "$(med secs deploy)" - "$(ratio deploy cli-deploy)" - ""
  row "ours: install" "$(med secs install)" "$total" - "$(med own install)" "usb-update"
  row "ours: compose-up (until healthy)" "$(med secs compose-up)" - "$(ratio compose-up hand-up)" - ""
  row "ours: run" "$(med secs run)" - - "$(med own run)" "usb-update; $(printf '%.1f' "$(mb "$(med tree run)")") with docker-compose"
  row "ours: install + run (end to end)" "$(echo "$(med secs install) + $(med secs run)" | bc -l)" "$total" "$(ratio install+run hand)" - ""
  echo
  # The install's phases against its wall time: the rest is its own work between phases.
  printf 'phases: verify + blob-copy + image-load + pull + deploy summed %.2f s, install took %.2f s\n' \
    "$(echo "$(med secs verify) + $(med secs blob-copy) + $(med secs image-load) + $(med secs pull) + $(med secs deploy)" | bc -l)" "$(med secs install)"
  x=$(ratio install floor)
  printf 'goal install <= 1.0x floor: %s (%.2f)\n' "$(verdict "$x <= 1.0")" "$x"
  x=$(ratio install floorio)
  printf 'install against the floor with writes (no goal; what this disk allows): %.2f\n' "$x"
  x=$(ratio install+run hand)
  printf 'goal end to end <= 0.75x by hand: %s (%.2f)\n' "$(verdict "$x <= 0.75")" "$x"
  x=$(ratio alone-pull cli-pull)
  printf 'goal pull (alone) <= 1.0x ostree pull-local: %s (%.2f)\n' "$(verdict "$x <= 1.0")" "$x"
  x=$(ratio blob-copy+image-load cli-load)
  printf 'goal blob-copy + image-load (beside the pull; alone: bench/apps.sh) <= 1.0x docker load: %s (%.2f)\n' "$(verdict "$x <= 1.0")" "$x"
  x=$(mb "$(med own install)")
  printf 'goal peak memory of install <= 40 MB: %s (%.1f MB; ostree pull-local %.1f MB)\n' "$(verdict "$x <= 40")" "$x" "$(mb "$(med tree cli-pull)")"
  printf 'goal check < 100 ms: %s (%.0f ms warm, %.0f ms cold)\n' "$(verdict "$(med secs check) < 0.1")" \
    "$(echo "$(med secs check) * 1000" | bc -l)" "$(echo "$(med secs check-cold) * 1000" | bc -l)"
  echo "load after $label: $load_after"
  echo "$files $(med own install) $(med own alone) $(med tree cli-pull) $(med tree cli-deploy) $(med own run)" >>"$work/memory"

  chattr -R -f -i "$s" 2>/dev/null || true
  rm -rf "$s"
done

if [ -s "$work/memory" ] && [ "$(wc -l <"$work/memory")" -gt 1 ]; then
  echo
  echo "| rootfs files | install, MB | install without apps, MB | ostree pull-local, MB | ostree admin deploy, MB | run, MB |"
  echo "|---:|---:|---:|---:|---:|---:|"
  sort -n "$work/memory" | awk '{printf "| %d | %.1f | %.1f | %.1f | %.1f | %.1f |\n", $1, $2/1024, $3/1024, $4/1024, $5/1024, $6/1024}'
  # The install pulls and deploys: its peak is set against the larger of the two CLI
  # steps that do the same (libostree's deploy prunes the repo, a table per object).
  sort -n "$work/memory" | awk 'function max(a, b) {return a > b ? a : b}
    NR == 1 {f = $1; a = $2; b = $3; c = max($4, $5)} {lf = $1; la = $2; lb = $3; lc = max($4, $5)}
    END {printf "growth from %d to %d files: install %+.1f MB, install without apps %+.1f MB, ostree CLI (the larger of pull-local and admin deploy) %+.1f MB (goal: install grows <= ostree CLI + 5 MB: %s)\n",
      f, lf, (la - a)/1024, (lb - b)/1024, (lc - c)/1024, ((la - a) <= (lc - c) + 5120) ? "met" : "missed"}'
fi
