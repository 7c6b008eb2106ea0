#!/usr/bin/env bash
# Entrypoint of the s0fs image: one-shot repository/volume set-up, then the
# mount (or the HTTP API) in the foreground, so the container's life is the
# mount's. Configuration comes from the environment:
#
#   S0FS_REPO          repository URL (s3://bucket/prefix?endpoint=…, or file:///…)
#   S0FS_KEY_FILE      key file (created by `init` if missing), or S0FS_PASSPHRASE
#   S0FS_VOLUME        volume to create and mount (default: default)
#   S0FS_MOUNTPOINT    where to mount it (default: /mnt/s0fs)
#   S0FS_MOUNT_ARGS    extra `s0fs mount` options (e.g. "--sync remote --metrics 0.0.0.0:9100")
#   S0FS_BIN           the s0fs command (default: node /opt/s0fs/bin/s0fs.js)
#   AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for S3
#
#   entrypoint.sh init     create the repository and the volume if they do not exist (idempotent)
#   entrypoint.sh mount    init, then mount in the foreground until SIGTERM (which unmounts cleanly)
#   entrypoint.sh serve    init, then s0fs serve (S0FS_LISTEN, S0FS_TOKEN_FILE)
#   entrypoint.sh ARGS…    any other s0fs command
set -euo pipefail

read -r -a S0FS <<< "${S0FS_BIN:-node /opt/s0fs/bin/s0fs.js}"
VOLUME="${S0FS_VOLUME:-default}"
MOUNTPOINT="${S0FS_MOUNTPOINT:-/mnt/s0fs}"

say() { printf 's0fs-entrypoint: %s\n' "$*" >&2; }

init() {
  : "${S0FS_REPO:?set S0FS_REPO to the repository URL}"
  if [ -z "${S0FS_KEY_FILE:-}" ] && [ -z "${S0FS_PASSPHRASE:-}" ]; then
    say "set S0FS_KEY_FILE (a key file, created if missing) or S0FS_PASSPHRASE"
    exit 2
  fi
  if "${S0FS[@]}" repo info >/dev/null 2>&1; then
    say "repository ${S0FS_REPO%%\?*} exists"
  else
    "${S0FS[@]}" init
    say "created repository ${S0FS_REPO%%\?*}"
  fi
  if "${S0FS[@]}" volume info "$VOLUME" >/dev/null 2>&1; then
    say "volume $VOLUME exists"
  else
    "${S0FS[@]}" volume create "$VOLUME"
    say "created volume $VOLUME"
  fi
}

case "${1:-mount}" in
  init)
    init
    ;;
  mount)
    init
    mkdir -p "$MOUNTPOINT"
    # The daemon sets its other runtime parameters itself (src/mount/runtime.ts); V8's young
    # generation is sized when node starts, so it comes from here: 2 MiB, for a small resident set.
    export NODE_OPTIONS="--max-semi-space-size=2${NODE_OPTIONS:+ $NODE_OPTIONS}"
    # shellcheck disable=SC2086 # S0FS_MOUNT_ARGS is a list of options
    exec "${S0FS[@]}" mount -f ${S0FS_MOUNT_ARGS:-} "$VOLUME" "$MOUNTPOINT"
    ;;
  serve)
    init
    exec "${S0FS[@]}" serve --listen "${S0FS_LISTEN:-0.0.0.0:8080}" --token-file "${S0FS_TOKEN_FILE:?set S0FS_TOKEN_FILE}"
    ;;
  *)
    exec "${S0FS[@]}" "$@"
    ;;
esac
