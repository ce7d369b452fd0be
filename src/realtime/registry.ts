/**
 * @module The connection registry: the sockets this node holds, by user and by session. It is the
 * only place that knows which users this node can push to.
 */

import type { LogEvent } from "../chat/chat.ts";

/** A push other than a message: presence, friend.added, group.member. */
export type Notice = Record<string, unknown> & { type: string };

/**
 * A logged-in (or logging-in) connection of any transport: a WebSocket, or a course client's TCP
 * connection. The hub pushes through it and the drain closes it, without knowing which it is.
 */
export interface Peer {
  readonly userId: number | null;
  /** Null once its session has ended or is to be ended by someone else (the drain, the rejoin). */
  sessionId: number | null;
  /** Resolves once the connection is closed and its session handled. */
  readonly ended: Promise<void>;
  /** A live event of one of its user's conversations; the peer orders and deduplicates. */
  push(event: LogEvent): void;
  notify(notice: Notice): void;
  /** Closes with a WebSocket close code; other transports map it to what they have. */
  close(code: number, reason: string): void;
  /** Sends whatever it missed of its user's conversations (after the bus was away). */
  resync(): Promise<void>;
  /**
   * Its user left the conversation (a group): the stream of it ends here, and starts afresh if
   * it joins again.
   */
  forget(conversation: number): void;
}

/**
 * Guarantees: a connection is listed from `add` until `remove`, and under its user and session
 * from `bind` until `remove`; lookups never return a removed connection. Not thread-safe and not
 * shared between nodes: each node has its own.
 */
export class Registry<C extends Peer = Peer> {
  #all = new Set<C>();
  #byUser = new Map<number, Set<C>>();
  #bySession = new Map<number, C>();
  /**
   * Where each bound connection is listed. Kept here rather than read back from the connection,
   * whose `sessionId` the drain and the rejoin clear before closing it.
   */
  #bindings = new Map<C, { userId: number; sessionId: number }>();

  get size(): number {
    return this.#all.size;
  }

  add(conn: C): void {
    this.#all.add(conn);
  }

  /** Lists `conn` under its user and session; call once it has logged in. */
  bind(conn: C): void {
    if (conn.userId === null || conn.sessionId === null || !this.#all.has(conn)) return;
    this.#unbind(conn);
    let set = this.#byUser.get(conn.userId);
    if (!set) this.#byUser.set(conn.userId, set = new Set());
    set.add(conn);
    this.#bySession.set(conn.sessionId, conn);
    this.#bindings.set(conn, { userId: conn.userId, sessionId: conn.sessionId });
  }

  /** Unlists `conn` from its user and session only (after logout; the connection stays). */
  unbind(conn: C): void {
    this.#unbind(conn);
  }

  remove(conn: C): void {
    this.#all.delete(conn);
    this.#unbind(conn);
  }

  #unbind(conn: C): void {
    const binding = this.#bindings.get(conn);
    if (!binding) return;
    this.#bindings.delete(conn);
    const set = this.#byUser.get(binding.userId);
    if (set?.delete(conn) && set.size === 0) this.#byUser.delete(binding.userId);
    if (this.#bySession.get(binding.sessionId) === conn) this.#bySession.delete(binding.sessionId);
  }

  byUser(userId: number): ReadonlySet<C> {
    return this.#byUser.get(userId) ?? new Set();
  }

  bySession(sessionId: number): C | undefined {
    return this.#bySession.get(sessionId);
  }

  all(): C[] {
    return [...this.#all];
  }

  /** Logged-in connections. */
  get sessions(): number {
    return this.#bySession.size;
  }
}
