/**
 * @module The one entry point and composition root: parses the command, reads the settings, builds
 * every part and hands each what it needs. Nothing else reads the environment.
 *
 *   serve              migrate, clear this node's leftovers, serve HTTP and WebSocket
 *   migrate            apply migrations, then exit
 *   reset [--all] [--force]
 *                      the offline reset: this node's sessions, or every node's, then exit
 *   healthcheck        GET /healthz on this node; exit 0 on 200, else 1
 */
import { Accounts } from "./chat/accounts.ts";
import { Chat } from "./chat/chat.ts";
import { type Config, ConfigError, loadConfig } from "./config.ts";
import { connect, type Database } from "./db/connect.ts";
import { nodeLockKey } from "./db/locks.ts";
import { migrate } from "./db/migrate.ts";
import { LiveNodesError, type NodeIdentity, resetAll, resetNode } from "./db/queries/presence.ts";
import { createApp } from "./http/app.ts";
import { claimNode, handleSignals, NodeClaimError, NodeRuntime } from "./lifecycle.ts";
import { createLogger, type Logger } from "./log.ts";
import { Metrics } from "./metrics.ts";
import { bounded } from "./time.ts";
import { SlidingWindow } from "./chat/throttle.ts";
import { countUndelivered } from "./db/queries/logs.ts";
import type { Bus } from "./realtime/bus.ts";
import { MemoryBus } from "./realtime/bus/memory.ts";
import { PgBus } from "./realtime/bus/postgres.ts";
import { NatsBus } from "./realtime/bus/nats.ts";
import { Registry } from "./realtime/registry.ts";
import { ChatSocket } from "./realtime/socket.ts";
import { Hub } from "./realtime/hub.ts";
import { CourseServer } from "./legacy/tcp.ts";

/** Exit codes of the process contract. */
const EXIT = { ok: 0, failed: 1, badConfig: 2, refused: 3 } as const;

const USAGE = "Usage: main.ts serve | migrate | reset [--all] [--force] | healthcheck";

/** How often expired login tokens are deleted. */
const TOKEN_SWEEP_MS = 60 * 60 * 1000;

/** Unsent bytes past which a socket counts as too slow and is closed. */
const MAX_BUFFERED_BYTES = 4 * 1024 * 1024;

function hostname(): string {
  try {
    return Deno.hostname();
  } catch {
    return "parley";
  }
}

async function openDatabase(config: Config, log: Logger): Promise<Database> {
  return await connect({
    databaseUrl: config.databaseUrl,
    dataDir: config.dataDir,
    appName: `parley:${config.nodeId}`,
    log,
  });
}

function identity(config: Config): NodeIdentity {
  return { id: config.nodeId, epoch: crypto.randomUUID(), lockKey: nodeLockKey(config.nodeId) };
}

/**
 * The last line of defence for a serving process: an error nothing caught is logged with its stack
 * and the process carries on. Ending it would drop every socket and, until the reaper runs, leave
 * its users online. The one seen in practice came from postgres.js 3.4.9, a write it ran after its
 * connection had closed; 4.2.0 has not shown it.
 */
function keepServing(log: Logger): void {
  globalThis.addEventListener("error", (event) => {
    event.preventDefault();
    log.error("process.uncaught", { error: event.error ?? event.message });
  });
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    log.error("process.unhandled_rejection", { error: event.reason });
  });
}

async function serve(config: Config, log: Logger): Promise<void> {
  keepServing(log);
  const db = await openDatabase(config, log);
  const applied = await migrate(db.sql);
  if (applied.length > 0) log.info("db.migrated", { versions: applied });

  const node = identity(config);
  const lockSql = db.dedicated("lock");
  const watchSql = db.dedicated("watch");
  // Built before the bus, which counts into it; gauges read the runtime when scraped, once it exists.
  const live: { runtime?: NodeRuntime } = {};
  const registry = new Registry();
  const metrics = new Metrics({
    sockets: () => registry.size,
    sessions: () => registry.sessions,
    draining: () => live.runtime?.draining ?? false,
    heartbeatAgeSeconds: () => (live.runtime?.health().heartbeatAgeMs ?? 0) / 1000,
    waiting: async () => (await bounded(countUndelivered(db.sql).catch(() => null), 1000)) ?? null,
  });
  const received = (kind: string) => metrics.busMessagesReceived.inc({ kind });
  const bus: Bus = config.busUrl
    ? await NatsBus.start({ servers: config.busUrl, sql: db.sql, log, nodeId: node.id, received })
    : db.kind === "server"
    ? await PgBus.start(db.sql, db.dedicated("listen")!, log, node.id, received)
    : new MemoryBus(received);
  const accounts = new Accounts(db.sql, config.tokenTtlMs);
  const chat = new Chat({
    sql: db.sql,
    sendSql: db.dedicated("send") ?? undefined,
    bus,
    accounts,
    node,
    loginPolicy: config.loginPolicy,
    log,
    loginFailures: new SlidingWindow(config.loginFailuresPerMin),
    registrations: new SlidingWindow(config.registrationsPerMin),
    syncLimit: config.syncLimit,
  });
  const runtime = await NodeRuntime.start({
    db,
    lockSql,
    watchSql,
    node,
    timing: config,
    chat,
    bus,
    registry,
    log,
  });
  live.runtime = runtime;
  const hub = new Hub({
    chat,
    bus,
    registry,
    log,
    presenceGraceMs: config.presenceGraceMs,
    metrics,
    nodeId: node.id,
  });

  const app = createApp({
    chat,
    nodeId: config.nodeId,
    log,
    allowedOrigins: config.allowedOrigins,
    maxConnections: config.maxConnections,
    idleTimeoutMs: config.idleTimeoutMs,
    connections: () => registry.size,
    health: async () => {
      const h = runtime.health();
      if (h.draining) return { ok: false, draining: true, reason: "draining" };
      const dbOk = await bounded(db.sql`select 1`.then(() => true, () => false), 1000) ?? false;
      if (!dbOk) return { ok: false, draining: false, reason: "database unreachable" };
      if (!h.ok) return { ok: false, draining: false, reason: "heartbeat stale" };
      // A bus that is down leaves the node serving (sends commit, logins catch up, resync follows
      // the reconnect), so it is reported, not failed: restarting the node would not bring it back.
      return { ok: true, draining: false, bus: bus.state };
    },
    draining: () => runtime.draining,
    metrics,
    createSocket: (socket, remote) =>
      new ChatSocket(socket, {
        chat,
        registry,
        log,
        authTimeoutMs: config.authTimeoutMs,
        maxFrameBytes: config.maxFrameBytes,
        rateLimitPerSec: config.rateLimitPerSec,
        rateLimitBurst: config.rateLimitBurst,
        maxBufferedBytes: MAX_BUFFERED_BYTES,
        metrics,
      }, remote),
  });

  const server = Deno.serve({
    hostname: config.host,
    port: config.port,
    onListen: ({ hostname, port }) => log.info("http.listening", { host: hostname, port }),
  }, app.fetch);
  const legacy = config.legacyTcpPort === undefined ? null : CourseServer.listen({
    hostname: config.host,
    port: config.legacyTcpPort,
    chat,
    registry,
    log,
    metrics,
    maxObjectBytes: config.maxFrameBytes,
    rateLimitPerSec: config.rateLimitPerSec,
    rateLimitBurst: config.rateLimitBurst,
    maxConnections: config.maxConnections,
    draining: () => runtime.draining,
  });
  if (legacy) log.info("legacy.listening", { host: legacy.addr.hostname, port: legacy.addr.port });
  runtime.startHeartbeat();
  // Expired tokens can never log anyone in; deleting them now and then keeps the table small.
  const sweep = setInterval(() => {
    accounts.sweepExpiredTokens().then(
      (n) => n > 0 && log.info("tokens.swept", { expired: n }),
      (error) => log.warn("tokens.sweep_failed", { error: String(error) }),
    );
  }, TOKEN_SWEEP_MS);

  handleSignals(
    () =>
      runtime.drain(async () => {
        clearInterval(sweep);
        hub.stop();
        await Promise.all([server.shutdown(), legacy?.stop()]);
      }),
    () => runtime.abandon(),
    config.shutdownTimeoutMs,
    log,
  );
}

async function reset(config: Config, log: Logger, args: string[]): Promise<number> {
  const db = await openDatabase(config, log);
  try {
    await migrate(db.sql);
    if (args.includes("--all")) {
      const users = await resetAll(db.sql, args.includes("--force"), config.nodeId);
      log.info("reset.all", { offline: users.length });
      return EXIT.ok;
    }
    // Holding the node's lock proves no live process of this NODE_ID still uses its sessions.
    const node = identity(config);
    await claimNode(db.dedicated("reset"), node, 2000);
    const users = await resetNode(db.sql, node.id);
    log.info("reset.node", { offline: users.length });
    return EXIT.ok;
  } catch (error) {
    if (error instanceof LiveNodesError || error instanceof NodeClaimError) {
      console.error(error.message);
      return EXIT.refused;
    }
    throw error;
  } finally {
    await db.close();
  }
}

async function healthcheck(config: Config): Promise<number> {
  const host = ["0.0.0.0", "::", ""].includes(config.host) ? "127.0.0.1" : config.host;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${config.port}/healthz`;
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(800) });
    await response.body?.cancel();
    return response.status === 200 ? EXIT.ok : EXIT.failed;
  } catch {
    return EXIT.failed;
  }
}

async function main(args: string[]): Promise<number | null> {
  const [command, ...rest] = args;
  if (!["serve", "migrate", "reset", "healthcheck"].includes(command)) {
    console.error(USAGE);
    return EXIT.badConfig;
  }
  let config: Config;
  try {
    config = loadConfig(Deno.env.toObject(), hostname());
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(error.message);
      return EXIT.badConfig;
    }
    throw error;
  }
  if (command === "healthcheck") return await healthcheck(config);
  const log = createLogger(config.logLevel, { node: config.nodeId });
  switch (command) {
    case "serve":
      await serve(config, log);
      return null;
    case "migrate": {
      const db = await openDatabase(config, log);
      try {
        log.info("db.migrated", { versions: await migrate(db.sql) });
      } finally {
        await db.close();
      }
      return EXIT.ok;
    }
    default:
      return await reset(config, log, rest);
  }
}

if (import.meta.main) {
  try {
    const code = await main(Deno.args);
    if (code !== null) Deno.exit(code);
  } catch (error) {
    console.error(JSON.stringify({
      time: new Date().toISOString(),
      level: "error",
      event: "process.failed",
      error: String(error),
      stack: (error as Error)?.stack,
    }));
    Deno.exit(EXIT.failed);
  }
}
