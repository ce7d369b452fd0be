/**
 * @module Group commit for sends. A commit per message caps a node at the database's commit rate;
 * here messages that arrive while a batch is being written wait for the next batch and go in
 * together, so under load one transaction stores hundreds, while a lone message still commits at
 * once. The next batch starts as soon as the one before has written its rows, while that one's
 * COMMIT (the WAL flush) is still under way: the node prepares and writes batch n+1 while the
 * disk flushes batch n.
 */
import { isDeadlock, type Sql, transaction } from "../db/connect.ts";
import { BatchRaced, type NewMessage, type Stored, storeMessages } from "../db/queries/chat.ts";
import type { Logger } from "../log.ts";

interface Pending {
  message: NewMessage;
  signal?: AbortSignal;
  /** The sending socket's session, passed on to `committed`. */
  session?: number;
  resolve: (stored: Stored) => void;
  reject: (error: unknown) => void;
}

/** Most messages one transaction takes; more wait for the next. */
const MAX_BATCH = 500;
/**
 * Batches under way at once: one being written, the other committing. Batches that share a
 * conversation still commit one after the other (its advisory lock is held until commit). On the
 * bench (2 cores, durable database) 3 were no better than 2.
 */
const MAX_OPEN = 2;

export class Outbox {
  #queue: Pending[] = [];
  /** A batch is reading and writing, before its COMMIT: the next one waits for that. */
  #writing = false;
  /** Batches started and not yet answered. */
  #open = 0;
  /** Settles once the latest batch's outcomes were handed out: each batch's go after the last's. */
  #handedOut: Promise<void> = Promise.resolve();

  /**
   * `committed` runs once per committed batch, with the messages it stored for the first time, in
   * id order: the place to tell recipients. Batches are handed out in the order they began, so
   * a conversation's messages reach `committed` in seq order.
   */
  constructor(
    private readonly sql: Sql,
    private readonly committed: (
      stored: (Extract<Stored, { ok: true }> & { session?: number })[],
    ) => void,
    /** Told of each batch run again after a deadlock. */
    private readonly log?: Logger,
  ) {}

  /**
   * Resolves once the message's transaction has committed (or refused it). A message whose
   * `signal` aborted before its batch began is not stored and rejects with the signal's reason.
   */
  store(message: NewMessage, signal?: AbortSignal, session?: number): Promise<Stored> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ message, signal, session, resolve, reject });
      this.#next();
    });
  }

  /** Starts a batch from the queue if none is being written and fewer than MAX_OPEN are open. */
  #next(): void {
    while (!this.#writing && this.#open < MAX_OPEN && this.#queue.length > 0) {
      const batch = this.#queue.splice(0, MAX_BATCH).filter((p) => {
        if (!p.signal?.aborted) return true;
        p.reject(p.signal.reason);
        return false;
      });
      if (batch.length > 0) void this.#run(batch);
    }
  }

  async #run(batch: Pending[]): Promise<void> {
    this.#writing = true;
    this.#open++;
    let writing = true;
    const written = () => {
      if (!writing) return;
      writing = false;
      this.#writing = false;
      this.#next();
    };
    const before = this.#handedOut;
    const handedOut = Promise.withResolvers<void>();
    this.#handedOut = handedOut.promise;
    try {
      let stored: Stored[];
      try {
        stored = await this.#store(batch.map((p) => p.message), written);
      } catch (error) {
        await before;
        for (const p of batch) p.reject(error);
        return;
      }
      await before;
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
    } finally {
      this.#open--;
      handedOut.resolve();
      if (writing) written();
      else this.#next();
    }
  }

  /**
   * One transaction, first without looking for resent clientIds (see storeMessages); again,
   * looking, when one of them was stored before or by another batch meanwhile; again as it was
   * when PostgreSQL ended it to break a deadlock. `written` runs once the rows are written and the
   * COMMIT is about to go.
   */
  async #store(messages: NewMessage[], written: () => void): Promise<Stored[]> {
    let looking = false;
    for (let attempt = 1;; attempt++) {
      try {
        return await transaction(this.sql, async (tx) => {
          const stored = await storeMessages(tx, messages, looking);
          written();
          return stored;
        });
      } catch (error) {
        if (!(error instanceof BatchRaced || isDeadlock(error)) || attempt >= 4) throw error;
        if (error instanceof BatchRaced) {
          looking = true;
        } else {
          this.log?.warn("db.deadlock_retried", { batch: "send", size: messages.length, attempt });
        }
      }
    }
  }
}
