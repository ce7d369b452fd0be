/**
 * @module Group commit for sends. A commit per message caps a node at the database's commit rate;
 * here messages that arrive while a commit is in flight wait for the next one and go in together,
 * so under load one transaction stores hundreds, while a lone message still commits at once.
 */
import { type Sql, transaction } from "../db/connect.ts";
import { BatchRaced, type NewMessage, type Stored, storeMessages } from "../db/queries/chat.ts";

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
 * Transactions in flight at once. Batches touching the same conversation commit one after the
 * other in any case; measured on 2 cores, 3 at once were no faster than 1, and smaller batches.
 */
const MAX_IN_FLIGHT = 1;

export class Outbox {
  #queue: Pending[] = [];
  #inFlight = 0;

  /**
   * `committed` runs once per committed batch, with the messages it stored for the first time, in
   * id order: the place to tell recipients.
   */
  constructor(
    private readonly sql: Sql,
    private readonly committed: (
      stored: (Extract<Stored, { ok: true }> & { session?: number })[],
    ) => void,
  ) {}

  /**
   * Resolves once the message's transaction has committed (or refused it). A message whose
   * `signal` aborted before its batch began is not stored and rejects with the signal's reason.
   */
  store(message: NewMessage, signal?: AbortSignal, session?: number): Promise<Stored> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ message, signal, session, resolve, reject });
      if (this.#inFlight < MAX_IN_FLIGHT) void this.#flush();
    });
  }

  /** One transaction; again when another batch stored one of its clientIds meanwhile. */
  async #store(messages: NewMessage[]): Promise<Stored[]> {
    for (let attempt = 1;; attempt++) {
      try {
        return await transaction(this.sql, (tx) => storeMessages(tx, messages));
      } catch (error) {
        if (!(error instanceof BatchRaced) || attempt >= 3) throw error;
      }
    }
  }

  async #flush(): Promise<void> {
    this.#inFlight++;
    try {
      while (this.#queue.length > 0) {
        const batch = this.#queue.splice(0, MAX_BATCH).filter((p) => {
          if (!p.signal?.aborted) return true;
          p.reject(p.signal.reason);
          return false;
        });
        if (batch.length === 0) continue;
        let stored: Stored[];
        try {
          stored = await this.#store(batch.map((p) => p.message));
        } catch (error) {
          for (const p of batch) p.reject(error);
          continue;
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
    } finally {
      this.#inFlight--;
    }
  }
}
