# syntax=docker/dockerfile:1
# (dockerfile:1 = the current 1.x frontend; COPY --parents below needs 1.20 or later.)

# Parley server image. Build: docker build -t parley .   Run: see compose.yaml.
#
# The official Deno image (Debian variant) brings /usr/bin/deno, tini at /tini, the non-root
# user `deno` and DENO_DIR=/deno-dir (owned by deno), where the dependency cache lives.
FROM denoland/deno:2.9.6

ENV DENO_NO_UPDATE_CHECK=1 \
    DENO_NO_PROMPT=1 \
    HOST=0.0.0.0 \
    PORT=8080

WORKDIR /app

# The code stays owned by root (read-only to the server); only DATA_DIR (default ./data, the
# embedded database, unused when DATABASE_URL is set) is writable by the `deno` user.
RUN mkdir -p /app/data && chown deno:deno /app/data

USER deno

# Dependencies first, in their own layer: it is rebuilt only when deno.json or deno.lock
# change. `deno install --frozen` fetches every import of deno.json at exactly the versions in
# deno.lock (and fails if the lock would change) into DENO_DIR. It must be all of them: a
# --cached-only run resolves every npm import of deno.json, used or not.
COPY deno.json deno.lock ./
RUN deno install --frozen

# Application code. `web*` (the static browser client) may not exist yet: with --parents a
# pattern that matches nothing is skipped instead of failing the build, and what matches keeps
# its path (src/..., web/...).
COPY --parents src web* ./
COPY --chmod=0755 docker/entrypoint.sh ./docker/entrypoint.sh
# Anything else src/main.ts reaches (jsr:, https:) is cached now, never at run time.
RUN deno cache --frozen src/main.ts

EXPOSE 8080

# Same as the `healthcheck` task, with --cached-only: no network but loopback, no fetching.
# --config makes it independent of the working directory the check runs in.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["deno", "run", "--cached-only", "--config=/app/deno.json", "--allow-net=127.0.0.1,localhost", "--allow-env", "/app/src/main.ts", "healthcheck"]

# tini stays PID 1: it forwards SIGTERM/SIGINT to its child and reaps zombies. The entrypoint
# runs `reset` for this NODE_ID, then execs `deno run ... src/main.ts serve`, so Deno is tini's
# direct child and drains on SIGTERM (see docker/entrypoint.sh).
ENTRYPOINT ["/tini", "--", "/app/docker/entrypoint.sh"]
CMD ["serve"]
