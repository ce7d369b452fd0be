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
  /** Waits on a peer's advisory lock to notice its death at once; null on the embedded database. */
  watchSql: Sql | null;
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
  await chat.wentOffline(offline);
  return offline.length;
}

/**
 * Notices a peer's death at once rather than at the next heartbeat. On a connection of its own it
 * waits for the advisory lock of the next node in the ring (presence.nextPeer): PostgreSQL grants
 * it the moment the peer's lock connection ends, which is when its process dies, and the watcher
 * reaps then and there. Each wait lasts one heartbeat, so the ring follows nodes that join and
 * leave. The slower paths stay: the heartbeat's lock probe covers a peer whose watcher is itself
 * frozen or dead, and the lease covers a host that vanished while its connection lingers.
 */
class PeerWatch {
  #stopped = false;

  constructor(
    private readonly sql: Sql,
    private readonly self: string,
    private readonly waitMs: number,
    /** How long after its own reconnection the watcher leaves free locks to the heartbeat. */
    private readonly settleMs: number,
    private readonly reap: () => Promise<number>,
    private readonly log: Logger,
  ) {
    void this.#loop();
  }

  async #loop(): Promise<void> {
    let backend: number | undefined;
    while (!this.#stopped) {
      try {
        const next = await presence.nextPeer(this.sql, this.self);
        if (backend !== undefined && next.backend !== backend) {
          // This connection was made again: the database restarted or the network blipped, and
          // the peers' lock connections most likely went too. A live peer takes its lock back at
          // its next heartbeat; until then a free lock says nothing about its process.
          backend = next.backend;
          await delay(this.settleMs);
          continue;
        }
        backend = next.backend;
        const peer = next.peer;
        if (!peer) {
          await delay(this.waitMs);
          continue;
        }
        if (!await presence.awaitLockFree(this.sql, peer, this.waitMs) || this.#stopped) continue;
        this.log.info("node.peer_gone", { peer: peer.id });
        // Nothing reaped: another node is deleting it right now (its row is locked). Pause rather
        // than spin on a lock that stays free until the row is gone.
        if (await this.reap() === 0) await delay(Math.min(this.waitMs, 100));
      } catch (error) {
        if (this.#stopped) return;
        this.log.warn("node.watch_failed", { error: String(error) });
        await delay(this.waitMs);
      }
    }
  }

  /** Ends the wait under way by ending its connection. */
  stop(): void {
    this.#stopped = true;
    this.sql.end({ timeout: 0 }).catch(() => {});
  }
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
  #watch: PeerWatch | undefined;

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
    const { watchSql, node, timing, log } = this.#o;
    this.#timer = setInterval(() => void this.beat(), timing.heartbeatMs);
    if (watchSql) {
      // A wait of at most a second: the ring follows nodes that join and leave that fast.
      const waitMs = Math.min(timing.heartbeatMs, 1000);
      this.#watch = new PeerWatch(
        watchSql,
        node.id,
        waitMs,
        2 * timing.heartbeatMs,
        () => this.#reap("watch"),
        log,
      );
    }
  }

  /** Deletes dead nodes with their sessions and tells contacts; returns how many it deleted. */
  async #reap(by: "watch" | "heartbeat"): Promise<number> {
    const { db, lockSql, node, log, chat } = this.#o;
    const reaped = await presence.reapDeadNodes(db.sql, node.id, lockSql !== null);
    if (reaped.nodes.length > 0) {
      log.warn("node.reaped", { nodes: reaped.nodes, offline: reaped.offline.length, by });
      await chat.wentOffline(reaped.offline);
    }
    return reaped.nodes.length;
  }

  /**
   * One heartbeat: confirm the lock, renew the lease, reap the dead, end the sessions whose socket
   * closed while the database was away. Skipped while one runs.
   */
  async beat(): Promise<void> {
    if (this.#beating || this.#draining) return;
    this.#beating = true;
    const { db, lockSql, node, timing, log } = this.#o;
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
      await this.#reap("heartbeat");
      await this.#o.chat.endLeftSessions();
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
   * The drain, in order (DESIGN.md, Presence): refuse new logins and let those under way finish;
   * end this node's sessions in the database and hand the offline to the bus; only then close every
   * socket with 1001, so that a client reconnecting at once to another node finds itself offline
   * there and contacts hear the offline before that reconnect's online (which the presence grace
   * then absorbs); wait (bounded) for the closes; delete the node's row with anything left; close
   * the bus, stop the HTTP server, end the pool. Idempotent: a second call returns the first one's
   * promise.
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
    this.#watch?.stop();
    log.info("node.draining", { sockets: registry.size });
    await bounded(chat.closeLogins(), Math.max(0, Math.min(left() / 4, 2000)));
    for (const socket of registry.all()) {
      // The node's sessions go in one statement below, not one per socket.
      socket.sessionId = null;
    }
    try {
      const offline = await bounded(
        presence.endNodeSessions(db.sql, node.id),
        Math.max(0, left() / 4),
      );
      if (offline) {
        await bounded(chat.wentOffline(offline), Math.max(0, Math.min(left() / 8, 1000)));
      }
    } catch (error) {
      // The database is away: the sockets still get 1001, and a device that resumes elsewhere
      // replaces its session there (PROTOCOL.md, already_online).
      log.error("node.drain_sessions_failed", { error: String(error) });
    }
    const sockets = registry.all();
    for (const socket of sockets) {
      socket.sessionId = null;
      socket.close(CLOSE.goingAway, "This node is shutting down: reconnect");
    }
    await bounded(
      Promise.all(sockets.map((s) => s.ended)),
      Math.max(0, Math.min(left() / 2, 3000)),
    );
    try {
      // Sessions a login opened after the first step (there should be none) go with the row.
      const late = await presence.resetNode(db.sql, node.id);
      await chat.wentOffline(late);
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
