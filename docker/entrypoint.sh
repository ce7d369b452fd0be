#!/bin/sh
# Parley container entrypoint.
#
#   entrypoint.sh [serve] [ARGS...]            reset this NODE_ID's leftovers, then exec serve
#   entrypoint.sh migrate|reset|healthcheck [ARGS...]   run that one command (exec)
#   entrypoint.sh PROGRAM [ARGS...]            exec any other program (e.g. sh, for debugging)
#
# In the image it runs as ["/tini", "--", "/app/docker/entrypoint.sh"] with CMD ["serve"]:
# tini stays PID 1, forwards signals and reaps zombies. It also works outside a container,
# from a checkout (`sh docker/entrypoint.sh`): paths are resolved from this script's own
# location, never from a hard-coded /app.
#
# Environment read here (the app reads the rest itself, see src/config.ts):
#   APP_DIR   directory holding deno.json and src/ (default: the parent of this script's dir)
#   DENO      deno executable (default: deno on PATH)
#   DATA_DIR  embedded database directory, the only place serve may write (default ./data)
#   RESET_ATTEMPTS (default 5), RESET_RETRY_DELAY_S (default 2): the start-up reset's retries
set -eu

log() {
  printf 'entrypoint: %s\n' "$*" >&2
}

SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
APP_DIR=${APP_DIR:-$(dirname -- "$SCRIPT_DIR")}
cd "$APP_DIR"

DENO=${DENO:-deno}
if ! command -v "$DENO" >/dev/null 2>&1; then
  log "deno not found (DENO=$DENO)"
  exit 127
fi

WRITE_DIR=${DATA_DIR:-./data}
case $WRITE_DIR in
  *[[:space:]]* | *,*)
    # Exit code 2 is the process contract's "bad setting".
    log "Invalid DATA_DIR \"$WRITE_DIR\": expected a path without spaces or commas"
    exit 2
    ;;
esac

# The one place the deno flags live. They are the `start`/`reset` tasks' flags from deno.json
# (with --allow-write following DATA_DIR, which defaults to the task's ./data), plus
# --cached-only: the image caches every dependency at build time from deno.lock, so the
# container never fetches anything at run time, and a missing dependency fails loudly at
# start instead of silently downloading. Outside the image run `deno install --frozen` once.
DENO_RUN_FLAGS="--cached-only --allow-net --allow-env --allow-sys=hostname,osRelease --allow-read --allow-write=$WRITE_DIR"
# The `healthcheck` task's flags: it only talks to this node over loopback.
DENO_HEALTH_FLAGS="--cached-only --allow-net=127.0.0.1,localhost --allow-env"

cmd=serve
if [ "$#" -gt 0 ]; then
  case $1 in
    serve)
      shift
      ;;
    migrate | reset)
      cmd=$1
      shift
      # shellcheck disable=SC2086 # the flag list is split into words on purpose
      exec "$DENO" run $DENO_RUN_FLAGS src/main.ts "$cmd" "$@"
      ;;
    healthcheck)
      shift
      # shellcheck disable=SC2086
      exec "$DENO" run $DENO_HEALTH_FLAGS src/main.ts healthcheck "$@"
      ;;
    -*)
      # Options only: they are for serve.
      ;;
    *)
      exec "$@"
      ;;
  esac
fi

# --- Before serve: a stop request must not be lost ------------------------------------------
# Until the exec below, this shell is the process tini signals. Helpers run in the background
# and are waited for, so that a SIGTERM/SIGINT interrupts the wait at once (a foreground child
# would delay the trap until it ended); the helper is then stopped too and we exit 0, as serve
# does after a clean drain: nothing was served yet, so there is nothing to drain.
child=''
stop_before_serve() {
  log "SIG$1 before serve started; stopping"
  if [ -n "$child" ]; then
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  exit 0
}
trap 'stop_before_serve TERM' TERM
trap 'stop_before_serve INT' INT

# Run a command in the background, wait for it, and leave its exit status in $status.
run_waited() {
  "$@" &
  child=$!
  status=0
  wait "$child" || status=$?
  child=''
}

# --- reset: this node's stale sessions --------------------------------------------------------
# After a SIGKILL, an OOM kill or a power loss the previous process could not delete its
# sessions, so its users would read online. `reset` deletes the sessions of this NODE_ID (never
# another node's) before serve accepts anyone. On a container (re)start the database may not
# answer yet (compose starts both together, a platform may restart the database too), so a
# failed reset is retried a few times with a short sleep. If it still fails, serve is started
# anyway: serve itself runs the same reset at start, after it has connected, so this early
# pass is an optimisation of "before the first new login", not a condition for serving.
# Exit code 2 means bad settings: retrying cannot help, and serve reports the same sentence.
attempts=${RESET_ATTEMPTS:-5}
delay=${RESET_RETRY_DELAY_S:-2}
case $attempts in
  '' | *[!0-9]* | 0)
    log "Invalid RESET_ATTEMPTS \"$attempts\": expected a whole number of at least 1"
    exit 2
    ;;
esac
case $delay in
  '' | *[!0-9.]* | *.*.* | .)
    log "Invalid RESET_RETRY_DELAY_S \"$delay\": expected a number of seconds"
    exit 2
    ;;
esac
attempt=1
while :; do
  # shellcheck disable=SC2086
  run_waited "$DENO" run $DENO_RUN_FLAGS src/main.ts reset
  if [ "$status" -eq 0 ]; then
    break
  fi
  if [ "$status" -eq 2 ]; then
    log "reset: bad settings (exit 2); starting serve, which reports them"
    break
  fi
  if [ "$attempt" -ge "$attempts" ]; then
    log "reset failed $attempt times (last exit $status); starting serve, which resets at start"
    break
  fi
  log "reset failed (exit $status), attempt $attempt of $attempts; retrying in ${delay}s"
  attempt=$((attempt + 1))
  run_waited sleep "$delay"
done

# --- serve --------------------------------------------------------------------------------------
# exec, not a child: Deno replaces this shell and keeps its PID, so the SIGTERM that tini
# forwards (docker stop, compose down, a platform's stop) reaches Deno itself, which drains:
# healthz turns 503, sockets get 1001, this node's sessions are deleted, exit 0. Without exec,
# tini would signal only the shell, the shell would not pass it on, and Deno would be SIGKILLed
# when the stop grace period ran out: no drain, and its users left online until their lease
# ran out. exec also resets our traps, so Deno starts with default signal dispositions.
# shellcheck disable=SC2086
exec "$DENO" run $DENO_RUN_FLAGS src/main.ts serve "$@"
