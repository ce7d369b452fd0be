/**
 * @module The bus: how nodes tell each other what happened. A small port with its engines side by
 * side in `bus/`: `postgres.ts` (LISTEN/NOTIFY, for a few nodes), `memory.ts` (one process, the
 * embedded mode).
 */

import type { Change, Message, Target } from "../chat/chat.ts";

/**
 * A committed message, its conversation (internal id) and every participant to push it to; the
 * sending socket's `session`, which gets `sent` instead, is skipped.
 */
export interface Delivery {
  message: Message;
  conversation: number;
  recipients: number[];
  session?: number;
}

/** What nodes tell each other. Each event is about rows already committed. */
export type BusEvent =
  /** A user's first session opened or last session closed, on any node. */
  | { type: "presence"; user: number; online: boolean }
  /**
   * Sessions replaced by a newer login (LOGIN_POLICY=takeover): their nodes close them with 4001.
   * `nodes` holds them: their rows are deleted by the time this is published.
   */
  | { type: "kick"; sessions: number[]; nodes: string[] }
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
  /**
   * A user left a group; `session` is the device that asked, as above. The leaver's devices forget
   * the group's `conversation` (internal id; null before its first event).
   */
  | {
    type: "member.left";
    group: number;
    user: number;
    conversation: number | null;
    session?: number;
  }
  /**
   * A typing notice passed on: for `recipients` (their nodes push to those online), sent by `from`
   * in the conversation `to` names, at `at` (ms since the epoch, by the passing node's clock).
   * `notice` names it: the parts of one notice (a large group's, split) share it.
   */
  | {
    type: "typing";
    from: number;
    to: Target;
    recipients: number[];
    at: number;
    notice: string;
  }
  /**
   * A user's readSeq moved in a conversation (`with` as that user names it): its other devices
   * (all but `session`) and, in a direct conversation, the other user are told.
   */
  | { type: "read"; user: number; with: Target; seq: number; session: number | null }
  /**
   * A message was edited or deleted (`change`, at its own seq of the conversation's log): pushed to
   * `recipients` but the asking socket's `session`. `message` is its new state, or null when too
   * large for a notification (nodes then read it by `id`).
   */
  | {
    type: "change";
    conversation: number;
    id: number;
    change: Change;
    message: Message | null;
    recipients: number[];
    session?: number;
  };

export type BusHandler = (event: BusEvent) => void;

/** Counts each message a node takes in from the bus, by kind (its events' type). */
export type BusReceived = (kind: string) => void;

/**
 * Who an event is for, as the nodes that must hear of it: those holding a session of one of
 * `users`, of a member of one of `groups`, of a contact (friend or fellow group member) of one of
 * `contactsOf`; and `nodes`, named directly. The parts add up. Engines that route (NATS) resolve it
 * against the sessions table after the commit; the others hand every event to every node, so an
 * audience only ever narrows who receives an event, never widens it.
 *
 * The audience is read after the commit the event describes, so name who must hear of it in the
 * state after that commit: a user who just left a group is no longer among its members, so name
 * that user in `users` as well.
 */
export interface Audience {
  users?: readonly number[];
  groups?: readonly number[];
  contactsOf?: readonly number[];
  nodes?: readonly string[];
}

/**
 * The routing table: every event type says here who it is for. A new event type must add its case
 * (the compiler insists), so the NATS bus never silently drops it.
 */
export function audienceOf(event: BusEvent): Audience {
  switch (event.type) {
    case "presence":
      return { contactsOf: [event.user] };
    case "kick":
      return { nodes: event.nodes };
    case "messages":
      return mergeAudiences(event.items.map(deliveryAudience));
    case "message.refs":
      return { users: event.recipients };
    case "friend":
      return { users: [event.user, event.friend] };
    case "member":
      return { groups: [event.group], users: [event.user] };
    case "unfriend":
      return { users: [event.user, event.friend] };
    case "member.left":
      // The leaver is no longer among the members: named for its other devices.
      return { groups: [event.group], users: [event.user] };
    case "typing":
      // A group's nodes are found by the group, cheaper than by a long list of its members.
      return "group" in event.to ? { groups: [event.to.group] } : { users: event.recipients };
    case "read":
      return { users: "user" in event.with ? [event.user, event.with.user] : [event.user] };
    case "change":
      // Both users, or every member of the group, as committed with the change.
      return { users: event.recipients };
    default: {
      const unrouted: never = event;
      throw new Error(`Bus event ${JSON.stringify(unrouted)} has no audience`);
    }
  }
}

/** One message's audience: the group's members, or the two users (the sender's other devices). */
export function deliveryAudience({ message }: Delivery): Audience {
  return "group" in message.to
    ? { groups: [message.to.group] }
    : { users: [message.to.user, message.from.id] };
}

function mergeAudiences(list: Audience[]): Audience {
  const out = { users: [] as number[], groups: [] as number[], contactsOf: [] as number[] };
  const nodes: string[] = [];
  for (const a of list) {
    for (const key of ["users", "groups", "contactsOf"] as const) {
      if (a[key]) out[key].push(...a[key]);
    }
    if (a.nodes) nodes.push(...a.nodes);
  }
  return { ...out, nodes };
}

/**
 * What healthz and the logs say about the bus: `connected`; `connecting` (never connected yet);
 * `disconnected` (was connected, reconnecting now: events published meanwhile are dropped and the
 * resync after reconnecting makes up for them); `closed`.
 */
export type BusState = "connected" | "connecting" | "disconnected" | "closed";

/**
 * Guarantees: `publish` resolves once its events have been handed to the bus, in order (call it
 * only after the transaction they describe has committed). Every node in an event's audience
 * (`audienceOf`) receives it at most once, in publish order per publisher, while its connection to
 * the bus is up; nodes outside it may receive it too (the PostgreSQL and memory engines give every
 * event to every node), so handlers filter by the sockets they hold. A `messages` event may skip
 * the node it came from, which delivers those messages itself. An event can be lost while a node's
 * or the publisher's connection is down: `onResync` then fires on every node that may have missed
 * something once the bus is back, and the node catches up from the tables, so a lost event costs
 * latency, never a message.
 */
export interface Bus {
  publish(...events: BusEvent[]): Promise<void>;
  subscribe(handler: BusHandler): void;
  /** Called after the bus (re)connected having possibly missed events, not on the first connect. */
  onResync(handler: () => void): void;
  readonly state: BusState;
  close(): Promise<void>;
}
