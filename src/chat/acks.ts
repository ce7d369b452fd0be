/**
 * @module Cursor moves (acks and reads) applied in batches: requests that arrive within a short
 * window, or while a batch is in flight, go into the next batch, which checks them all in one
 * round trip and writes every cursor that moves in one statement, the highest seq per cursor only.
 * However many sockets acknowledge at once, a node writes each cursor at most once per batch.
 */
import { isDeadlock, type Sql } from "../db/connect.ts";
import {
  type CursorMoves,
  moveCursors,
  resolveMessageIds,
  resolveTargets,
} from "../db/queries/logs.ts";
import type { Logger } from "../log.ts";
import { ChatError } from "./errors.ts";

export type Target = { user: number } | { group: number };

export type CursorRequest =
  /** Version 1: up to each listed message's seq, in its conversation; ids not visible are ignored. */
  | { kind: "ids"; user: number; device: string | null; ids: readonly number[] }
  /** The device has the conversation up to `seq`. */
  | { kind: "ack"; user: number; device: string | null; target: Target; seq: number }
  /** The user has read the conversation up to `seq`. */
  | { kind: "read"; user: number; device: string | null; target: Target; seq: number }
  /** Written to a connection that has no acks (the course protocol): the user has it. */
  | { kind: "delivered"; user: number; conversation: number; seq: number };

/** What a request did: for a read, the readSeq it moved the user to, if it moved. */
export interface CursorOutcome {
  conversation: number | null;
  movedReadSeq: number | null;
}

interface Pending {
  request: CursorRequest;
  resolve: (outcome: CursorOutcome) => void;
  reject: (error: unknown) => void;
}

/**
 * How long a request waits for others to join its batch, unless something waits for it (see
 * `hurry`). An ack has no reply, and an ack that is lost with a crashed node only means the event
 * comes again; a window turns a recipient's acks of many messages in a busy conversation into one
 * write.
 */
const WINDOW_MS = 20;

/** Tries of a batch that PostgreSQL ends to break a deadlock, before its requests fail. */
const MAX_ATTEMPTS = 3;

export class CursorBatcher {
  #queue: Pending[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #flushing = false;
  /** The queue is to be written as soon as the batch in flight, if any, is done. */
  #hurried = false;

  constructor(
    private readonly sql: Sql,
    private readonly windowMs = WINDOW_MS,
    /** Told of each batch run again after a deadlock. */
    private readonly log?: Logger,
  ) {}

  /**
   * Resolves once the request's cursors are written (or were already as far), rejects with
   * `not_found` for a conversation the user cannot see and `bad_frame` for a seq beyond its last.
   */
  move(request: CursorRequest): Promise<CursorOutcome> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ request, resolve, reject });
      this.#schedule();
    });
  }

  /**
   * A request waits for what is queued: a socket starts its next request, and sends its next
   * answer, only once its ack or read is written. The queue then goes now (or right after the batch
   * in flight) rather than at the end of the window, which would add the window to that request.
   */
  hurry(): void {
    if (this.#queue.length === 0) return;
    this.#hurried = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#schedule();
  }

  #schedule(): void {
    if (this.#flushing || this.#timer !== undefined || this.#queue.length === 0) return;
    if (this.#hurried) {
      this.#hurried = false;
      void this.#flush();
      return;
    }
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#flush();
    }, this.windowMs);
  }

  async #flush(): Promise<void> {
    this.#flushing = true;
    const batch = this.#queue.splice(0, this.#queue.length);
    try {
      for (let attempt = 1;; attempt++) {
        try {
          await this.#apply(batch);
          break;
        } catch (error) {
          if (!isDeadlock(error) || attempt >= MAX_ATTEMPTS) throw error;
          this.log?.warn("db.deadlock_retried", { batch: "cursors", size: batch.length, attempt });
        }
      }
    } catch (error) {
      for (const p of batch) p.reject(error);
    } finally {
      this.#flushing = false;
      this.#schedule();
    }
  }

  async #apply(batch: Pending[]): Promise<void> {
    const idPairs: { p: number; user: number; id: number }[] = [];
    const targeted: { p: number; user: number; other: number | null; group: number | null }[] = [];
    batch.forEach(({ request: r }, p) => {
      if (r.kind === "ids") { for (const id of r.ids) idPairs.push({ p, user: r.user, id }); }
      if (r.kind === "ack" || r.kind === "read") {
        targeted.push({
          p,
          user: r.user,
          other: "user" in r.target ? r.target.user : null,
          group: "group" in r.target ? r.target.group : null,
        });
      }
    });
    const [idRows, targetRows] = await Promise.all([
      resolveMessageIds(this.sql, idPairs.map((x) => x.user), idPairs.map((x) => x.id)),
      resolveTargets(this.sql, targeted),
    ]);

    const devices = new Map<string, [string, number, number]>();
    const users = new Map<string, [number, number, number, number]>();
    const device = (d: string | null, conversation: number, seq: number) => {
      if (d === null || seq === 0) return;
      const key = `${d}/${conversation}`;
      const had = devices.get(key);
      if (!had || had[2] < seq) devices.set(key, [d, conversation, seq]);
    };
    const user = (u: number, conversation: number, delivered: number, read: number) => {
      const key = `${u}/${conversation}`;
      const had = users.get(key) ?? [u, conversation, 0, 0];
      users.set(key, [u, conversation, Math.max(had[2], delivered), Math.max(had[3], read)]);
    };

    const outcomes: (CursorOutcome | Error)[] = batch.map(() => ({
      conversation: null,
      movedReadSeq: null,
    }));
    for (const row of idRows) {
      const { p, user: u } = idPairs[row.n - 1];
      const r = batch[p].request as Extract<CursorRequest, { kind: "ids" }>;
      device(r.device, row.conversation, row.seq);
      user(u, row.conversation, row.seq, 0);
    }
    for (const row of targetRows) {
      const { p } = targeted[row.n - 1];
      const r = batch[p].request as Extract<CursorRequest, { kind: "ack" | "read" }>;
      if (!row.visible) {
        outcomes[p] = "user" in r.target
          ? new ChatError("not_found", `No user has id ${r.target.user}: check the id`)
          : new ChatError(
            "not_found",
            `You are not a member of group ${r.target.group}: check the id or join it`,
          );
        continue;
      }
      if (r.seq > row.lastSeq) {
        outcomes[p] = new ChatError(
          "bad_frame",
          `Invalid field "seq" in ${r.kind}: ${r.seq} is beyond the conversation's last, ${row.lastSeq}`,
        );
        continue;
      }
      if (row.conversation === null || r.seq === 0) continue;
      outcomes[p] = { conversation: row.conversation, movedReadSeq: null };
      if (r.kind === "ack") {
        device(r.device, row.conversation, r.seq);
        user(r.user, row.conversation, r.seq, 0);
      } else {
        // Read up to seq means the user's device has everything up to there too.
        user(r.user, row.conversation, r.seq, r.seq);
      }
    }
    batch.forEach(({ request: r }) => {
      if (r.kind === "delivered") user(r.user, r.conversation, r.seq, 0);
    });

    const moves: CursorMoves = { devices: [...devices.values()], users: [...users.values()] };
    const movedReads = moves.users.length + moves.devices.length === 0
      ? []
      : await moveCursors(this.sql, moves);
    const moved = new Map(movedReads.map((m) => [`${m.user}/${m.conversation}`, m.readSeq]));
    batch.forEach((pending, p) => {
      const outcome = outcomes[p];
      if (outcome instanceof Error) return pending.reject(outcome);
      const r = pending.request;
      if (r.kind === "read" && outcome.conversation !== null) {
        outcome.movedReadSeq = moved.get(`${r.user}/${outcome.conversation}`) ?? null;
      }
      pending.resolve(outcome);
    });
  }
}
