# Parley server image. Build: docker build -t parley .   Run: see compose.yaml and the README.
#
# Classic Dockerfile syntax only (no `# syntax=` line, no COPY --parents/--chmod/--link, no RUN
# --mount): it builds alike with Docker with or without BuildKit, podman/buildah and kaniko.
# podman: `podman build --format docker`, else the OCI format drops the HEALTHCHECK.
#
# The official Deno image (Debian variant) brings /usr/bin/deno, tini at /tini, the non-root
# user `deno` and DENO_DIR=/deno-dir (owned by deno), where the dependency cache lives. Named with
# its registry: podman refuses a short name where several search registries are configured.
FROM docker.io/denoland/deno:2.9.6

# DENO_UNSTABLE_NPM_LAZY_CACHING: without it, any npm use caches (and with --cached-only
# demands) every package of deno.lock, test packages included. With it, Deno caches and needs
# only the packages the program reaches, so the image holds the server's packages alone.
ENV DENO_NO_UPDATE_CHECK=1 \
    DENO_NO_PROMPT=1 \
    DENO_UNSTABLE_NPM_LAZY_CACHING=1 \
    HOST=0.0.0.0 \
    PORT=8080

WORKDIR /app

# The code stays owned by root (read-only to the server); only DATA_DIR (default ./data, the
# embedded database, unused when DATABASE_URL is set) is writable by the `deno` user.
RUN mkdir -p /app/data && chown deno:deno /app/data

USER deno

# Dependencies first, in their own layer: rebuilt only when the import maps or deno.lock change.
# deno.json's imports are the server's; the test-only ones live in the workspace member
# tests/deno.json, copied only because the workspace (and so the frozen lock) names it. A frozen
# cache of a file importing each of deno.json's own imports fetches exactly those packages at the
# versions in deno.lock, and fails if the lock would change.
COPY deno.json deno.lock ./
COPY tests/deno.json ./tests/deno.json
RUN deno eval 'const { imports } = JSON.parse(Deno.readTextFileSync("deno.json")); \
      const names = Object.keys(imports).filter((name) => !name.endsWith("/")); \
      Deno.writeTextFileSync("/tmp/deps.ts", names.map((n) => `import "${n}";\n`).join(""));' \
 && deno cache --frozen --config=deno.json /tmp/deps.ts \
 && rm /tmp/deps.ts

# Application code, and the entrypoint (executable in git, and COPY keeps the mode).
COPY src ./src
COPY web ./web
COPY docker/entrypoint.sh ./docker/entrypoint.sh
# Anything else src/main.ts reaches is cached now, never at run time.
RUN deno cache --frozen src/main.ts

EXPOSE 8080

# The entrypoint's `healthcheck` command: the deno flags live in one place (docker/entrypoint.sh).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/app/docker/entrypoint.sh", "healthcheck"]

# tini stays PID 1: it forwards SIGTERM/SIGINT to its child and reaps zombies. The entrypoint
# runs `reset` for this NODE_ID, then execs `deno run ... src/main.ts serve`, so Deno is tini's
# direct child and drains on SIGTERM (see docker/entrypoint.sh).
ENTRYPOINT ["/tini", "--", "/app/docker/entrypoint.sh"]
CMD ["serve"]
