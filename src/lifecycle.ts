/**
 * @module A node's life: claim the node id (advisory lock), clear what an earlier incarnation left,
 * renew the lease and reap dead nodes on every heartbeat, and drain on SIGINT/SIGTERM in a fixed,
 * bounded order.
 */
import type { Chat } from "./chat/chat.ts";
import type { Database, Sql } from "./db/connect.ts";
import * as presence from "./db/queries/presence.ts";
import type { Logger } from "./log.ts";
import type { Bus } from "./realtime/bus.ts";
import type { Registry } from "./realtime/registry.ts";
import { CLOSE } from "./realtime/socket.ts";
import { bounded, delay } from "./time.ts";

export interface Timing {
  heartbeatMs: number;
  nodeTtlMs: number;
  shutdownTimeoutMs: number;
}

export class NodeClaimError extends Error {
  override name = "NodeClaimError";
}

/**
 * Takes this node's advisory lock on `lockSql` (its own connection). A predecessor with the same
 * NODE_ID whose lease has run out but whose connection lingers is ended; a live one is waited for
 * up to `waitMs`, then refused.
 */
export async function claimNode(
  lockSql: Sql | null,
  node: presence.NodeIdentity,
  waitMs: number,
): Promise<void> {
  if (!lockSql) return;
  const deadline = Date.now() + waitMs;
  while (!await presence.holdNodeLock(lockSql, node)) {
    if (await presence.endStaleLockHolder(lockSql, node)) continue;
    if (Date.now() > deadline) {
      throw new NodeClaimError(
        `Another live process holds NODE_ID "${node.id}": give each node its own NODE_ID`,
      );
    }
    await delay(250);
  }
}

export interface NodeOptions {
  db: Database;
  /** Holds the advisory lock and runs the heartbeat; null on the embedded database. */
  lockSql: Sql | null;
  node: presence.NodeIdentity;
  timing: Timing;
  chat: Chat;
  bus: Bus;
  registry: Registry;
  log: Logger;
}

/**
 * Claims the node id, clears what an earlier incarnation left (telling contacts of the users it
 * leaves offline) and registers the current one. Returns how many users it left offline.
 */
async function register({ lockSql, node, timing, db, chat }: NodeOptions): Promise<number> {
  await claimNode(lockSql, node, timing.nodeTtlMs);
  const offline = await presence.resetNode(db.sql, node.id);
  await presence.registerNode(db.sql, node, timing.nodeTtlMs);
  chat.wentOffline(offline);
  return offline.length;
}

export interface Health {
  ok: boolean;
  draining: boolean;
  /** Milliseconds since this node last renewed its lease. */
  heartbeatAgeMs: number;
}

export class NodeRuntime {
  readonly #o: NodeOptions;
  #timer: ReturnType<typeof setInterval> | undefined;
  #lastRenewal = performance.now();
  #beating = false;
  #draining = false;

  constructor(options: NodeOptions) {
    this.#o = options;
  }

  /** The start-up half of the process contract: claim, reset leftovers, register. */
  static async start(options: NodeOptions): Promise<NodeRuntime> {
    const cleared = await register(options);
    options.log.info("node.started", { epoch: options.node.epoch, cleared });
    return new NodeRuntime(options);
  }

  get draining(): boolean {
    return this.#draining;
  }

  health(): Health {
    const age = performance.now() - this.#lastRenewal;
    return {
      ok: !this.#draining && age < this.#o.timing.nodeTtlMs / 2,
      draining: this.#draining,
      heartbeatAgeMs: Math.round(age),
    };
  }

  startHeartbeat(): void {
    this.#timer = setInterval(() => void this.beat(), this.#o.timing.heartbeatMs);
  }

  /** One heartbeat: confirm the lock, renew the lease, reap the dead. Skipped while one runs. */
  async beat(): Promise<void> {
    if (this.#beating || this.#draining) return;
    this.#beating = true;
    const { db, lockSql, node, timing, log, chat } = this.#o;
    try {
      const heartbeatSql = lockSql ?? db.sql;
      const locked = lockSql ? await presence.holdNodeLock(lockSql, node) : true;
      const renewal = locked
        ? await presence.renewLease(heartbeatSql, node, timing.nodeTtlMs)
        : "lost";
      if (renewal === "lost") {
        await this.#rejoin();
      } else {
        this.#lastRenewal = performance.now();
      }
      const reaped = await presence.reapDeadNodes(db.sql, node.id, lockSql !== null);
      if (reaped.nodes.length > 0) {
        log.warn("node.reaped", { nodes: reaped.nodes, offline: reaped.offline.length });
        chat.wentOffline(reaped.offline);
      }
    } catch (error) {
      log.warn("node.heartbeat_failed", { error: String(error) });
    } finally {
      this.#beating = false;
    }
  }

  /**
   * Other nodes took this one for dead (its lease ran out, or its lock connection dropped) and
   * deleted its sessions. Its sockets no longer count as online, so they are closed with 1001 to
   * log in again, and the node registers anew.
   */
  async #rejoin(): Promise<void> {
    const { node, log, registry } = this.#o;
    // A new incarnation from this moment: logins until it is registered are refused, and no
    // session of the old one can count again.
    node.epoch = crypto.randomUUID();
    log.error("node.lease_lost", { sockets: registry.size, epoch: node.epoch });
    for (const socket of registry.all()) {
      socket.sessionId = null;
      socket.close(CLOSE.goingAway, "This node lost its lease: reconnect");
    }
    await register(this.#o);
    this.#lastRenewal = performance.now();
  }

  /**
   * The drain, in order: refuse new work, close every socket with 1001 and wait (bounded) for the
   * closes, delete this node's sessions and row in one statement, tell contacts, close the bus,
   * stop the HTTP server, end the pool. Idempotent: a second call returns the first one's promise.
   */
  #drain?: Promise<void>;
  drain(stopServer: () => Promise<void>): Promise<void> {
    this.#drain ??= this.#drainOnce(stopServer);
    return this.#drain;
  }

  async #drainOnce(stopServer: () => Promise<void>): Promise<void> {
    const { db, node, timing, log, registry, chat, bus } = this.#o;
    const started = performance.now();
    const left = () => timing.shutdownTimeoutMs - (performance.now() - started);
    this.#draining = true;
    clearInterval(this.#timer);
    const sockets = registry.all();
    log.info("node.draining", { sockets: sockets.length });
    for (const socket of sockets) {
      // The node's sessions go in one statement below, not one per socket.
      socket.sessionId = null;
      socket.close(CLOSE.goingAway, "This node is shutting down: reconnect");
    }
    await bounded(
      Promise.all(sockets.map((s) => s.ended)),
      Math.max(0, Math.min(left() / 2, 3000)),
    );
    try {
      const offline = await presence.resetNode(db.sql, node.id);
      chat.wentOffline(offline);
    } catch (error) {
      log.error("node.drain_reset_failed", { error: String(error) });
    }
    await bounded(bus.close(), Math.max(0, left() / 4));
    await bounded(stopServer(), Math.max(0, left() / 2));
    await bounded(db.close(), Math.max(0, left() - 100));
    log.info("node.drained", { ms: Math.round(performance.now() - started) });
  }

  /** The second signal: remove this node's sessions if the database answers quickly, then go. */
  async abandon(): Promise<void> {
    const { db, node } = this.#o;
    await bounded(presence.resetNode(db.sql, node.id).catch(() => []), 1000);
  }
}

/**
 * Runs `drain` on the first SIGINT or SIGTERM and exits 0 when it is done, or 1 when it overruns
 * `timeoutMs`; a second signal runs `abandon` and exits at once.
 */
export function handleSignals(
  drain: () => Promise<void>,
  abandon: () => Promise<void>,
  timeoutMs: number,
  log: Logger,
): void {
  let signalled = false;
  const onSignal = (signal: Deno.Signal) => {
    if (signalled) {
      log.warn("process.second_signal", { signal });
      abandon().finally(() => Deno.exit(1));
      return;
    }
    signalled = true;
    log.info("process.signal", { signal });
    const watchdog = setTimeout(() => {
      log.error("process.drain_timeout", { timeoutMs });
      Deno.exit(1);
    }, timeoutMs);
    drain().then(
      () => {
        clearTimeout(watchdog);
        Deno.exit(0);
      },
      (error) => {
        log.error("process.drain_failed", { error });
        Deno.exit(1);
      },
    );
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => onSignal(signal));
  }
}
