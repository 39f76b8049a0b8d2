#!/usr/bin/env bash
# What a careful operator would do by hand with the stick, verifying nothing: mount it,
# pull the commit into the sysroot and deploy it, load the images from the tarballs on the
# stick, put each app's compose file in place (images by the tags the tarballs carry) and
# bring the apps up, then wait until every container runs and is healthy. The baseline of
# bench/sizes.sh; prints `by-hand <step> <seconds>` per step.
#
# usage: DOCKER_HOST=unix://... bench/by-hand.sh STICK_IMAGE MOUNT_DIR SYSROOT APPS_DIR
set -euo pipefail
img=$1 mnt=$2 sysroot=$3 apps_dir=$4
now() { date +%s.%N; }
step() { # name command...
  local start
  start=$(now)
  "${@:2}"
  echo "by-hand $1 $(echo "$(now) - $start" | bc)"
}

mkdir -p "$mnt"
# The loop device of an earlier mount of the image may still be detaching: retry.
mount_ro() { for _ in $(seq 40); do mount -o ro,loop "$img" "$mnt" 2>/dev/null && return 0; sleep 0.25; done; mount -o ro,loop "$img" "$mnt"; }
step mount mount_ro
bundle=$mnt/bundle
commit=$(ostree --repo="$bundle/ostree_repo" rev-parse intel-corei7-64-lmp)
step pull ostree --repo="$sysroot/ostree/repo" pull-local --untrusted "$bundle/ostree_repo" "$commit" >/dev/null
step deploy ostree admin deploy --sysroot="$sysroot" --os=lmp "$commit" >/dev/null
load() { for tar in "$mnt"/tars/*.tar; do docker load -q -i "$tar" >/dev/null; done; }
step load load
up() {
  local app name
  for app in "$bundle"/apps/apps/*/*/; do
    name=$(basename "$(dirname "$app")")
    mkdir -p "$apps_dir/$name"
    # A vanilla engine cannot resolve name@sha256: after a load: use the loaded tags.
    sed 's#^\( *image: *\)\([^@]*\)@sha256:\(.......\).*#\1\2:\3#' "$app/docker-compose.yml" \
      >"$apps_dir/$name/docker-compose.yml"
    docker-compose -p "$name" -f "$apps_dir/$name/docker-compose.yml" up -d --no-build >/dev/null 2>&1
  done
  # Up means running and, where there is a healthcheck, healthy.
  local deadline=$(($(date +%s) + 300)) states
  while :; do
    states=$(docker ps -aq | xargs -r docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}')
    if [ -n "$states" ] && ! grep -qv -e '^running/healthy$' -e '^running/none$' <<<"$states"; then break; fi
    [ "$(date +%s)" -lt "$deadline" ] || { echo "apps not up: $states" >&2; return 1; }
    sleep 0.25
  done
}
step up up
step umount umount "$mnt"
