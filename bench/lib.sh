# Shared set-up of the bench scripts (sourced, not run): timing, caches, a sandboxed device
# (an OSTree sysroot, its config), a private dockerd, docker-save tarballs of a bundle's
# images, and the clean-up of all of it. The caller sets `work` (its scratch directory)
# before sourcing, and installs `trap bench_cleanup EXIT`.

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
verdict() { if [ "$(echo "$1" | bc -l)" = 1 ]; then echo met; else echo missed; fi; }

# mount_stick IMAGE DIR [OPTIONS]: a loop mount, retried: the loop device of the previous
# mount of the same image is detached asynchronously and a new mount may find it busy.
mount_stick() {
  local i
  for i in $(seq 40); do
    mount -o "loop${3:+,$3}" "$1" "$2" 2>/dev/null && return 0
    sleep 0.25
  done
  mount -o "loop${3:+,$3}" "$1" "$2"
}

bench_build() {
  cargo build --release --quiet -p test-kit --bin make-bundle
  # The device binary with its simulated boot (the sandbox is never booted), nothing else.
  cargo build --release --quiet -p usb-update --features simulation --bin usb-update
  bin=$PWD/target/release/usb-update
  make_bundle=$PWD/target/release/make-bundle
}

# sysroot DIR IMAGE_REPO COMMIT: an OSTree sysroot at DIR running COMMIT of IMAGE_REPO.
sysroot() {
  mkdir -p "$1"
  ostree admin init-fs --modern "$1" >/dev/null 2>&1
  ostree admin os-init --sysroot="$1" lmp >/dev/null
  ostree config --repo="$1/ostree/repo" set sysroot.bootloader none
  ostree --repo="$1/ostree/repo" pull-local --untrusted "$2" "$3" >/dev/null
  ostree admin deploy --sysroot="$1" --os=lmp "$3" >/dev/null
}

# sota_toml FILE SYSROOT VAR TUF TYPE [BOOTED]: the device's aktualizr-lite config.
sota_toml() {
  mkdir -p "$(dirname "$1")" "$3"
  cat >"$1" <<TOML
[provision]
primary_ecu_hardware_id = "intel-corei7-64"
[pacman]
type = "$5"
sysroot = "$2"
booted = "${6:-staged}"
tags = "devel"
reset_apps_root = "$3/reset-apps"
compose_apps_root = "$3/compose-apps"
[storage]
path = "$3"
uptane_metadata_path = "$4"
[import]
base_path = "$3/import"
[bootloader]
reboot_sentinel_dir = "$3/aktualizr-session"
TOML
}

# A private engine: its own data and exec roots, socket, containerd namespaces; no default
# bridge, no iptables rules. dockerd_start DATA_ROOT NAMESPACE; sets sock, dpid, DOCKER_HOST.
dpid=
dockerd_start() {
  sock=$work/docker.sock
  dockerd --data-root "$1" --exec-root "$work/dexec" --pidfile "$work/dpid" \
    -H "unix://$sock" --bridge none --iptables=false --ip6tables=false --ip-masq=false \
    --containerd-namespace "$2" --containerd-plugins-namespace "$2-plugins" \
    >"$work/dockerd.log" 2>&1 &
  dpid=$!
  for _ in $(seq 300); do
    curl -sf --unix-socket "$sock" http://d/_ping >/dev/null 2>&1 && break
    kill -0 "$dpid" 2>/dev/null || { tail -20 "$work/dockerd.log" >&2; return 1; }
    sleep 0.1
  done
  api http://d/_ping >/dev/null
  export DOCKER_HOST=unix://$sock
}
api() { curl -sS --fail --unix-socket "$sock" "$@"; }

dockerd_stop() {
  [ -n "$dpid" ] || return 0
  # Compose networks' bridges outlive the engine: named br-<network id prefix>.
  local bridges
  bridges=$(curl -sf --unix-socket "$sock" http://d/networks 2>/dev/null |
    jq -r '.[] | select(.Driver == "bridge" and .Name != "bridge") | .Id[0:12]' || true)
  kill -TERM "$dpid" 2>/dev/null || true
  for _ in $(seq 200); do kill -0 "$dpid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$dpid" 2>/dev/null || true
  wait "$dpid" 2>/dev/null || true
  dpid=
  for b in $bridges; do ip link delete "br-$b" 2>/dev/null || true; done
}

# Containers, images and compose networks gone: the engine as a fresh device has it.
engine_reset() {
  local ids
  ids=$(api 'http://d/containers/json?all=1' | jq -r '.[].Id')
  for id in $ids; do api -X DELETE "http://d/containers/$id?force=1&v=1" >/dev/null; done
  ids=$(api http://d/images/json | jq -r '.[].Id')
  for id in $ids; do api -X DELETE "http://d/images/$id?force=1" >/dev/null; done
  ids=$(api http://d/networks | jq -r '.[] | select(.Driver == "bridge" and .Name != "bridge") | .Id')
  for id in $ids; do
    api -X DELETE "http://d/networks/$id" >/dev/null
    ip link delete "br-${id:0:12}" 2>/dev/null || true
  done
  [ "$(api http://d/images/json | jq length)" = 0 ] || { echo "the engine kept images" >&2; return 1; }
}

# docker_save_tars BUNDLE OUT: each image of the bundle's apps as a `docker save` tar in
# OUT (manifest.json, the config, the gzip'd layers as they are in the bundle), tagged
# <repo>:<first 7 hex of the manifest digest> as composectl tags it. Prints the image ids.
docker_save_tars() {
  local blobs=$1/apps/blobs/sha256 out=$2 index mhex repo manifest chex stage lhex i
  mkdir -p "$out"
  for index in $(find "$1/apps/apps" -path '*/images/*' -name index.json | sort); do
    mhex=$(jq -r '.manifests[0].digest | sub("^sha256:"; "")' "$index")
    repo=${index#*/images/}
    repo=${repo%/"$mhex"/index.json}
    manifest=$blobs/$mhex
    chex=$(jq -r '.config.digest | sub("^sha256:"; "")' "$manifest")
    stage=$out/$mhex
    mkdir -p "$stage"
    cp "$blobs/$chex" "$stage/$chex.json"
    local layers=()
    i=0
    for lhex in $(jq -r '.layers[].digest | sub("^sha256:"; "")' "$manifest"); do
      mkdir -p "$stage/$i"
      ln -s "$blobs/$lhex" "$stage/$i/layer.tar"
      layers+=("$i/layer.tar")
      i=$((i + 1))
    done
    jq -cn --arg c "$chex.json" --arg t "$repo:${mhex:0:7}" --args \
      '[{Config: $c, RepoTags: [$t], Layers: $ARGS.positional}]' "${layers[@]}" >"$stage/manifest.json"
    tar -C "$stage" -chf "$out/$mhex.tar" manifest.json "$chex.json" "${layers[@]%/layer.tar}"
    rm -rf "$stage"
    echo "sha256:$chex"
  done
}

# Whatever is mounted under the work directory (sticks, dockerd's layers, shm, netns),
# deepest first; then the directory.
bench_cleanup() {
  dockerd_stop
  awk -v w="$work/" 'index($2, w) == 1 {print $2}' /proc/self/mounts | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  chattr -R -f -i "$work" 2>/dev/null || true
  rm -rf "$work"
}

# median V...: the middle value (the mean of the two middle ones for an even count).
median() {
  printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

# The 1-minute load average.
load1() { cut -d' ' -f1 /proc/loadavg; }

# quiet_or_mark WHAT: a figure counts only from a quiet machine (1-minute load <= MAX_LOAD,
# default 1.5). Waits up to BENCH_WAIT seconds (default 120) for the load to fall; then,
# with BENCH_STRICT=1, refuses (exit 3), else prints a NOT QUIET mark that the figures of
# WHAT carry. Sets `quiet` to "quiet" or "NOT QUIET".
quiet_or_mark() {
  local max=${MAX_LOAD:-1.5} waited=0
  while [ "$(echo "$(load1) > $max" | bc -l)" = 1 ] && [ "$waited" -lt "${BENCH_WAIT:-120}" ]; do
    sleep 5
    waited=$((waited + 5))
  done
  if [ "$(echo "$(load1) > $max" | bc -l)" = 1 ]; then
    if [ "${BENCH_STRICT:-0}" = 1 ]; then
      echo "refused: 1-minute load $(load1) > $max before $1 (BENCH_STRICT=1)" >&2
      exit 3
    fi
    quiet="NOT QUIET"
    echo "*** NOT QUIET: 1-minute load $(load1) > $max before $1: its figures do not count ***"
  else
    quiet=quiet
  fi
}
