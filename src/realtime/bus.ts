/**
 * @module The bus: how nodes tell each other what happened. A small port with its engines side by
 * side in `bus/`: `postgres.ts` (LISTEN/NOTIFY, for a few nodes), `memory.ts` (one process, the
 * embedded mode).
 */

import type { Message, Target } from "../chat/chat.ts";

/** A committed message and the users it waits for. */
export interface Delivery {
  message: Message;
  recipients: number[];
}

/** What nodes tell each other. Each event is about rows already committed. */
export type BusEvent =
  /** A user's first session opened or last session closed, on any node. */
  | { type: "presence"; user: number; online: boolean }
  /** Sessions replaced by a newer login (LOGIN_POLICY=takeover): their nodes close them with 4001. */
  | { type: "kick"; sessions: number[] }
  /** New messages, whole, from node `origin` (which delivered them to its own sockets already). */
  | { type: "messages"; origin: string; items: Delivery[] }
  /** New messages too large to carry whole: the recipients' nodes fetch them by id. */
  | { type: "message.refs"; origin: string; ids: number[]; recipients: number[] }
  /** Two users became friends. */
  | { type: "friend"; user: number; friend: number }
  /** A user joined a group. */
  | { type: "member"; group: number; user: number }
  /**
   * Two users are no longer friends (friend.remove, or a block). `session` is the device of `user`
   * that asked: its reply told it, so it gets no push.
   */
  | { type: "unfriend"; user: number; friend: number; session?: number }
  /** A user left a group; `session` is the device that asked, as above. */
  | { type: "member.left"; group: number; user: number; session?: number }
  /**
   * A typing notice passed on: for `recipients` (their nodes push to those online), sent by `from`
   * in the conversation `to` names, at `at` (ms since the epoch, by the passing node's clock).
   */
  | { type: "typing"; from: number; to: Target; recipients: number[]; at: number };

export type BusHandler = (event: BusEvent) => void;

/**
 * Guarantees: `publish` resolves once its events have been handed to the bus, in order (call it
 * only after the transaction they describe has committed). Every subscriber on every node receives
 * each event at most once, in publish order per publisher, while its connection to the bus is up;
 * a `messages` event may skip the node it came from, which delivers those messages itself. Events
 * published while a node's connection is down are lost to that node: `onResync` then fires when
 * the connection is back, and the node catches up from the tables.
 */
export interface Bus {
  publish(...events: BusEvent[]): Promise<void>;
  subscribe(handler: BusHandler): void;
  /** Called after the bus (re)connected having possibly missed events, not on the first connect. */
  onResync(handler: () => void): void;
  close(): Promise<void>;
}
