/**
 * @module Acknowledgements applied in batches: acks that arrive while a delete is in flight go
 * into the next one, so that a node deletes its recipients' waiting rows in one statement however
 * many sockets acknowledge at once.
 */
import type { Sql } from "../db/connect.ts";
import { deleteWaitingPairs } from "../db/queries/chat.ts";

interface Pending {
  userId: number;
  ids: readonly number[];
  resolve: () => void;
  reject: (error: unknown) => void;
}

export class AckBatcher {
  #queue: Pending[] = [];
  #flushing = false;

  constructor(private readonly sql: Sql) {}

  /** Resolves once the waiting rows of `ids` for `userId` are deleted. */
  ack(userId: number, ids: readonly number[]): Promise<void> {
    if (ids.length === 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.#queue.push({ userId, ids, resolve, reject });
      if (!this.#flushing) void this.#flush();
    });
  }

  async #flush(): Promise<void> {
    this.#flushing = true;
    try {
      while (this.#queue.length > 0) {
        const batch = this.#queue.splice(0, this.#queue.length);
        const users = batch.flatMap((p) => p.ids.map(() => p.userId));
        const messages = batch.flatMap((p) => p.ids);
        try {
          await deleteWaitingPairs(this.sql, users, messages);
          for (const p of batch) p.resolve();
        } catch (error) {
          for (const p of batch) p.reject(error);
        }
      }
    } finally {
      this.#flushing = false;
    }
  }
}
