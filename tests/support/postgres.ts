/** @module Finds or starts the real PostgreSQL server that a test run uses. */

export type ProvidedPostgres = {
  /** Admin URL of a server where the tests may create and drop databases. */
  url: string;
  provider: "env" | "testcontainers" | "local";
  /** Idempotent: later calls wait for the first. */
  stop(): Promise<void>;
  /** Restarts the server on the same port; only the local cluster offers it. */
  restart?(): Promise<void>;
  /** Data directory of the local cluster, for tests that fault the server from their own process. */
  dataDir?: string;
  /** The testcontainers PostgreSQL's container id, for the same purpose. */
  containerId?: string;
};

type Log = (line: string) => void;

const IMAGE = "postgres:15-alpine";

export interface PostgresOptions {
  /**
   * Durable: fsync, synchronous_commit and full_page_writes on, as a production server runs. The
   * tests' default is off (speed, and nothing of theirs must outlive a crash); the bench asks for
   * durable, since "committed before sent" means nothing on a server that does not persist.
   */
  durable?: boolean;
  /** Extra `name=value` settings for a server this module starts (e.g. pg_stat_statements). */
  settings?: Record<string, string>;
}

/** The settings of a server started here, as `name=value`. */
function serverSettings(options: PostgresOptions): string[] {
  const durability = options.durable ? "on" : "off";
  return [
    `fsync=${durability}`,
    `synchronous_commit=${durability}`,
    `full_page_writes=${durability}`,
    "max_connections=300",
    ...Object.entries(options.settings ?? {}).map(([k, v]) => `${k}=${v}`),
  ];
}

// A misconfigured DOCKER_HOST (a host that drops packets) makes testcontainers' runtime check wait
// for the TCP timeout, which is minutes; a working engine answers its info call in milliseconds.
const RUNTIME_CHECK_MS = 10_000;

const NO_POSTGRES = "No PostgreSQL for the tests: set DATABASE_URL to a server where databases " +
  "may be created, start a container engine (Docker or Podman) for testcontainers, or install " +
  "the Debian package postgresql so that initdb and pg_ctl are available";

/**
 * DATABASE_URL when set; else testcontainers when an engine answers; else a local cluster.
 * PARLEY_TEST_POSTGRES=testcontainers|local takes that provider only and fails rather than fall
 * back to another (CI runs the suite through each and must not pass on the wrong one).
 */
export async function providePostgres(
  log: Log = () => {},
  options: PostgresOptions = {},
): Promise<ProvidedPostgres> {
  const fromEnv = Deno.env.get("DATABASE_URL");
  if (fromEnv) {
    return { url: fromEnv, provider: "env", stop: () => Promise.resolve() };
  }
  const only = Deno.env.get("PARLEY_TEST_POSTGRES") ?? "";
  if (!["", "testcontainers", "local"].includes(only)) {
    throw new Error(
      `Invalid PARLEY_TEST_POSTGRES "${only}": expected testcontainers or local (or unset)`,
    );
  }
  if (only !== "local") {
    const container = await tryTestcontainers(log, options);
    if (container) return container;
    if (only === "testcontainers") {
      throw new Error(
        "PARLEY_TEST_POSTGRES=testcontainers but no container engine answers: start Docker, or " +
          "podman's Docker API and set DOCKER_HOST (see the log lines above)",
      );
    }
  }
  const bin = await findPostgresBin();
  if (!bin) {
    log("PostgreSQL: no initdb and pg_ctl on PATH or under /usr/lib/postgresql/*/bin");
    throw new Error(NO_POSTGRES);
  }
  return await startLocalCluster(bin, log, options);
}

async function tryTestcontainers(
  log: Log,
  options: PostgresOptions,
): Promise<ProvidedPostgres | undefined> {
  // Importing testcontainers installs signal-exit's handlers for 18 signals (via proper-lockfile),
  // which Deno's op sanitizer reports as leaks in any test that calls this and which re-raise
  // SIGINT. So look first, as testcontainers' own strategies do, for any sign of an engine.
  const engine = await findContainerEngine();
  if (!engine) {
    log("PostgreSQL: no container engine (no DOCKER_HOST, ~/.testcontainers.properties or socket)");
    return undefined;
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    // Imported lazily so that runs with DATABASE_URL never load dockerode and its dependencies.
    const { getContainerRuntimeClient } = await import("testcontainers");
    await Promise.race([
      getContainerRuntimeClient(),
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no answer within ${RUNTIME_CHECK_MS} ms`)),
          RUNTIME_CHECK_MS,
        );
      }),
    ]);
  } catch (error) {
    log(`PostgreSQL: container engine at ${engine} does not answer (${message(error)})`);
    return undefined;
  } finally {
    clearTimeout(timer);
  }
  const { PostgreSqlContainer } = await import("@testcontainers/postgresql");
  // The same server settings as the local cluster: room for the suite's many nodes and pools,
  // and no durability work that a throwaway database does not need.
  // A host port of our choosing, not the engine's: it survives a restart of the container, so
  // that the URL handed to the tests stays true (the outage test restarts the server).
  const started = await new PostgreSqlContainer(IMAGE)
    .withCommand(["postgres", ...serverSettings(options).flatMap((s) => ["-c", s])])
    .withExposedPorts({ container: 5432, host: freePort() })
    .start();
  log(`PostgreSQL: testcontainers ${IMAGE} at ${started.getHost()}:${started.getPort()}`);
  let stopping: Promise<void> | undefined;
  return {
    url: started.getConnectionUri(),
    provider: "testcontainers",
    containerId: started.getId(),
    stop: () => stopping ??= started.stop().then(() => {}),
  };
}

/** Where testcontainers would look for an engine (its strategies in container-runtime/), if set. */
async function findContainerEngine(): Promise<string | undefined> {
  if (Deno.build.os === "windows") return "a named pipe";
  const dockerHost = Deno.env.get("DOCKER_HOST");
  if (dockerHost) return `DOCKER_HOST "${dockerHost}"`;
  const home = Deno.env.get("HOME") ?? "";
  const xdg = Deno.env.get("XDG_RUNTIME_DIR");
  const places = [
    `${home}/.testcontainers.properties`,
    "/var/run/docker.sock",
    ...(xdg ? [`${xdg}/docker.sock`] : []),
    `${home}/.docker/run/docker.sock`,
    `${home}/.docker/desktop/docker.sock`,
    `/run/user/${Deno.uid()}/docker.sock`,
  ];
  for (const place of places) {
    if (await exists(place)) return place;
  }
  return undefined;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Directory holding both initdb and pg_ctl: PATH first, then the newest Debian install. */
async function findPostgresBin(): Promise<string | undefined> {
  const fromPath = (Deno.env.get("PATH") ?? "").split(":").filter((dir) => dir !== "");
  const debian: { dir: string; version: number[] }[] = [];
  try {
    for await (const entry of Deno.readDir("/usr/lib/postgresql")) {
      const version = entry.name.split(".").map(Number);
      if (version.every(Number.isFinite)) {
        debian.push({ dir: `/usr/lib/postgresql/${entry.name}/bin`, version });
      }
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  debian.sort((a, b) => compareVersions(b.version, a.version));
  for (const dir of [...fromPath, ...debian.map((d) => d.dir)]) {
    if (await isExecutable(`${dir}/initdb`) && await isExecutable(`${dir}/pg_ctl`)) return dir;
  }
  return undefined;
}

function compareVersions(a: number[], b: number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    const info = await Deno.stat(path);
    return info.isFile && ((info.mode ?? 0o111) & 0o111) !== 0;
  } catch {
    return false;
  }
}

async function startLocalCluster(
  bin: string,
  log: Log,
  options: PostgresOptions,
): Promise<ProvidedPostgres> {
  // PostgreSQL refuses to run as root, so as root the cluster belongs to the postgres user.
  const asRoot = Deno.uid() === 0;
  const owner = asRoot ? await lookUpUser("postgres") : undefined;
  const dir = await Deno.makeTempDir({ prefix: "parley-pg-" });
  const data = `${dir}/data`;
  const logFile = `${dir}/log`;
  const pgCtl = `${bin}/pg_ctl`;
  const run = (cmd: string, args: string[]) =>
    runAs(cmd, args, { user: asRoot ? "postgres" : undefined, cwd: dir });
  let port = 0;
  const serverOptions = () =>
    `-p ${port} -k '${dir}' -c listen_addresses=127.0.0.1 ` +
    serverSettings(options).map((setting) => `-c ${setting}`).join(" ");
  try {
    if (owner) await Deno.chown(dir, owner.uid, owner.gid);
    const t0 = performance.now();
    const initdbArgs = ["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"];
    await run(`${bin}/initdb`, ["-D", data, ...initdbArgs]);
    const t1 = performance.now();
    // Another process may take the port between our probe and the server's bind; try afresh then.
    for (let attempt = 1;; attempt++) {
      port = freePort();
      try {
        await run(pgCtl, ["-D", data, "-o", serverOptions(), "-l", logFile, "-w", "start"]);
        break;
      } catch (error) {
        const serverLog = await readTail(logFile);
        if (attempt >= 3 || !/could not bind|address already in use/i.test(serverLog)) {
          throw new Error(`${message(error)}\nServer log ${logFile}:\n${serverLog}`);
        }
      }
    }
    const t2 = performance.now();
    log(
      `PostgreSQL: local cluster from ${bin} on 127.0.0.1:${port} in ${dir} ` +
        `(initdb ${Math.round(t1 - t0)} ms, start ${Math.round(t2 - t1)} ms)`,
    );
  } catch (error) {
    // pg_ctl -w gives up after a minute but leaves a slow server starting: stop it regardless.
    await run(pgCtl, ["-D", data, "-m", "immediate", "stop"]).catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw error;
  }
  let stopping: Promise<void> | undefined;
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    provider: "local",
    dataDir: data,
    stop: () =>
      stopping ??= (async () => {
        try {
          await run(pgCtl, ["-D", data, "-m", "fast", "-w", "stop"]);
        } catch (error) {
          // Never delete the data directory under a running server.
          await run(pgCtl, ["-D", data, "-m", "immediate", "-w", "stop"]).catch(() => {});
          throw error;
        } finally {
          await Deno.remove(dir, { recursive: true });
        }
      })(),
    // -l again, or the restarted server would write to pg_ctl's stdout and hold our pipe open.
    restart: async () => {
      const options = ["-o", serverOptions(), "-l", logFile];
      await run(pgCtl, ["-D", data, ...options, "-m", "fast", "-w", "restart"]);
    },
  };
}

async function lookUpUser(name: string): Promise<{ uid: number; gid: number }> {
  const passwd = await Deno.readTextFile("/etc/passwd").catch(() => "");
  for (const line of passwd.split("\n")) {
    const [user, , uid, gid] = line.split(":");
    if (user === name) return { uid: Number(uid), gid: Number(gid) };
  }
  throw new Error(
    `No user "${name}" in /etc/passwd: PostgreSQL refuses to run as root, so a local cluster ` +
      `started as root needs that user (the Debian package postgresql creates it)`,
  );
}

/** Runs a command, as `user` when given, and throws with its stderr when it fails. */
async function runAs(
  cmd: string,
  args: string[],
  { user, cwd }: { user?: string; cwd: string },
): Promise<string> {
  // cwd is ours to choose: as another user, the caller's directory may not be readable.
  const options = { cwd, stdin: "null", stdout: "piped", stderr: "piped" } as const;
  let program = cmd;
  let argv = args;
  let out: Deno.CommandOutput;
  if (!user) {
    out = await new Deno.Command(program, { ...options, args: argv }).output();
  } else {
    try {
      [program, argv] = ["runuser", ["-u", user, "--", cmd, ...args]];
      out = await new Deno.Command(program, { ...options, args: argv }).output();
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
      // su hands the arguments after the user name to the shell, which execs them unquoted.
      [program, argv] = ["su", ["-s", "/bin/sh", user, "-c", 'exec "$0" "$@"', cmd, ...args]];
      out = await new Deno.Command(program, { ...options, args: argv }).output();
    }
  }
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes).trim();
  if (!out.success) {
    throw new Error(
      `Command "${[program, ...argv].join(" ")}" exited with code ${out.code}: ` +
        (decode(out.stderr) || decode(out.stdout) || "no output"),
    );
  }
  return decode(out.stdout);
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

async function readTail(path: string): Promise<string> {
  const text = await Deno.readTextFile(path).catch(() => "(no server log)");
  return text.split("\n").slice(-20).join("\n");
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Restarts (fast mode) the local cluster whose data directory is `dataDir`, from any process: the
 * test run's own cluster, named by PARLEY_TEST_PG_DATADIR. pg_ctl reuses the options it was
 * started with (postmaster.opts), so the port stays the same.
 */
export async function restartLocalCluster(dataDir: string): Promise<void> {
  const bin = await findPostgresBin();
  if (!bin) throw new Error("No pg_ctl found to restart the local cluster with");
  const dir = dataDir.replace(/\/data$/, "");
  await runAs(`${bin}/pg_ctl`, ["-D", dataDir, "-l", `${dir}/log`, "-m", "fast", "-w", "restart"], {
    user: Deno.uid() === 0 ? "postgres" : undefined,
    cwd: dir,
  });
}

/**
 * Restarts the test run's own PostgreSQL from any process, keeping its address: the local cluster
 * (PARLEY_TEST_PG_DATADIR) with pg_ctl, or the testcontainers container (PARLEY_TEST_PG_CONTAINER)
 * through the engine's API at DOCKER_HOST. False when the run does not own its server
 * (DATABASE_URL).
 */
export function canRestartPostgres(): boolean {
  return Boolean(
    Deno.env.get("PARLEY_TEST_PG_DATADIR") || Deno.env.get("PARLEY_TEST_PG_CONTAINER"),
  );
}

export async function restartPostgres(): Promise<void> {
  const dataDir = Deno.env.get("PARLEY_TEST_PG_DATADIR");
  if (dataDir) return await restartLocalCluster(dataDir);
  const id = Deno.env.get("PARLEY_TEST_PG_CONTAINER");
  if (!id) throw new Error("This run's PostgreSQL is not the tests' own: it cannot be restarted");
  await restartContainer(id);
}

/** POST /containers/ID/restart on the Docker API (Docker's, or podman's compatible one). */
async function restartContainer(id: string): Promise<void> {
  const host = Deno.env.get("DOCKER_HOST") ?? "unix:///var/run/docker.sock";
  let client: Deno.HttpClient | undefined;
  let base: string;
  if (host.startsWith("unix://")) {
    client = Deno.createHttpClient({ proxy: { transport: "unix", path: host.slice(7) } });
    base = "http://docker";
  } else if (host.startsWith("tcp://")) {
    base = `http://${host.slice(6)}`;
  } else {
    throw new Error(`Unsupported DOCKER_HOST "${host}": expected unix:// or tcp://`);
  }
  try {
    const response = await fetch(`${base}/containers/${id}/restart?t=10`, {
      method: "POST",
      client,
      signal: AbortSignal.timeout(60_000),
    });
    const text = await response.text();
    if (!response.ok) {
      throw new Error(`Restarting container ${id} answered ${response.status}: ${text}`);
    }
  } finally {
    client?.close();
  }
}
