/**
 * @module Group commit for sends. A commit per message caps a node at the database's commit rate;
 * here messages that arrive while a batch is being stored wait for the next batch and go in
 * together, so under load one statement stores hundreds, while a lone message still commits at
 * once. A batch is one statement that commits by itself (store_messages), so the node waits for
 * the database once per batch; on a connection of its own, the next batch waits on that
 * connection behind the one before, and the database goes from one to the next without waiting
 * for the node.
 */
import type { Sql } from "../db/connect.ts";
import { type NewMessage, type Stored, storeMessages } from "../db/queries/chat.ts";
import type { Logger } from "../log.ts";

interface Pending {
  message: NewMessage;
  signal?: AbortSignal;
  /** The sending socket's session, passed on to `committed`. */
  session?: number;
  resolve: (stored: Stored) => void;
  reject: (error: unknown) => void;
}

/** Most messages one batch takes; more wait for the next. */
const MAX_BATCH = 500;
/**
 * Fewest messages a batch waiting behind another takes; fewer wait for the one running. Sent at
 * once, the few that arrive just after a batch left would make a batch of their own, and big and
 * tiny batches would alternate, each paying a statement's fixed cost. On the bench (direct, 8 in
 * flight) batches sent eagerly had a median of one message.
 */
const MIN_QUEUED = 32;

export interface OutboxOptions {
  /**
   * Where batches are stored. With `ordered`, a client of one connection: it runs the batches
   * sent to it in the order they were sent, so two can be under way at once (one running, the
   * next waiting on the connection). Otherwise a pool, whose connections run batches side by
   * side: one batch at a time, so that a socket's messages keep their order in the log.
   */
  sql: Sql;
  ordered?: boolean;
  /** Told of each batch that PostgreSQL ended to break a deadlock before it stored it. */
  log?: Logger;
}

export class Outbox {
  #queue: Pending[] = [];
  /** Batches sent and not yet answered. */
  #open = 0;
  readonly #sql: Sql;
  readonly #depth: number;
  readonly #log?: Logger;

  /**
   * `committed` runs once per committed batch, with the messages it stored for the first time, in
   * id order: the place to tell recipients. Batches are answered in the order they were sent, so
   * a conversation's messages reach `committed` in seq order.
   */
  constructor(
    options: OutboxOptions,
    private readonly committed: (
      stored: (Extract<Stored, { ok: true }> & { session?: number })[],
    ) => void,
  ) {
    this.#sql = options.sql;
    this.#depth = options.ordered ? 2 : 1;
    this.#log = options.log;
  }

  /**
   * Resolves once the message's batch has committed (or refused it). A message whose `signal`
   * aborted before its batch began is not stored and rejects with the signal's reason.
   */
  store(message: NewMessage, signal?: AbortSignal, session?: number): Promise<Stored> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ message, signal, session, resolve, reject });
      this.#next();
    });
  }

  /** Sends a batch from the queue while fewer than the depth are under way. */
  #next(): void {
    while (
      this.#open < this.#depth && this.#queue.length > (this.#open === 0 ? 0 : MIN_QUEUED - 1)
    ) {
      const batch = this.#queue.splice(0, MAX_BATCH).filter((p) => {
        if (!p.signal?.aborted) return true;
        p.reject(p.signal.reason);
        return false;
      });
      if (batch.length > 0) void this.#run(batch);
    }
  }

  async #run(batch: Pending[]): Promise<void> {
    this.#open++;
    let outcome: Awaited<ReturnType<typeof storeMessages>>;
    try {
      outcome = await storeMessages(this.#sql, batch.map((p) => p.message));
    } catch (error) {
      for (const p of batch) p.reject(error);
      return;
    } finally {
      // The next batch goes to the database before this one's senders and recipients are told.
      this.#open--;
      this.#next();
    }
    const { stored, deadlocks } = outcome;
    if (deadlocks > 0) {
      this.#log?.warn("db.deadlock_retried", { batch: "send", size: batch.length, deadlocks });
    }
    batch.forEach((p, i) => p.resolve(stored[i]));
    const fresh = stored.flatMap((s, i) =>
      s.ok && s.created
        ? [batch[i].session !== undefined ? { ...s, session: batch[i].session } : s]
        : []
    );
    try {
      if (fresh.length > 0) this.committed(fresh);
    } catch {
      // Telling recipients is best effort: what is committed waits for them in any case.
    }
  }
}
