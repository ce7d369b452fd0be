/**
 * @module The chat domain: what a logged-in user can do, whatever transport carries the request.
 * It writes through the query modules, commits, and only then tells other nodes through the bus.
 * It knows nothing of sockets: pushing to them is the realtime layer's job.
 */
import type { Sql } from "../db/connect.ts";
import * as q from "../db/queries/chat.ts";
import * as logs from "../db/queries/logs.ts";
import * as edits from "../db/queries/edits.ts";
import type { ChangeKind } from "../db/queries/edits.ts";
import * as presence from "../db/queries/presence.ts";
import type { Logger } from "../log.ts";
import type { Bus, BusEvent, Delivery } from "../realtime/bus.ts";
import { Outbox } from "./outbox.ts";
import { CursorBatcher } from "./acks.ts";
import { Accounts, validate } from "./accounts.ts";
import { ChatError } from "./errors.ts";
import type { SlidingWindow } from "./throttle.ts";
import { groupDescription, groupName, messageText } from "./rules.ts";
import { BLOCKED_MESSAGE, People } from "./people.ts";

export type { FriendRow as Friend, GroupRow as Group } from "../db/queries/chat.ts";
export type Target = { user: number } | { group: number };
export type { Range } from "../db/queries/logs.ts";

export interface User {
  id: number;
  name: string;
}

/** A message as the wire shows it (PROTOCOL.md, Types). */
export interface Message {
  id: number;
  /** Its position in its conversation's log. */
  seq: number;
  from: User;
  to: Target;
  text: string;
  at: string;
  clientId?: string;
  /** Set once the message was edited: its latest text is from then. */
  editedAt?: string;
  /** Set once the message was deleted; its text is then "". */
  deleted?: true;
}

/** An edit or a deletion: an event of its own in the message's log, at `seq`. */
export interface Change {
  kind: ChangeKind;
  seq: number;
}

/**
 * An event of a conversation's log as the server moves it around: a new message (at the
 * message's own seq), or a `change` of one (at the change's seq); `message` is the message's
 * state at the event or later.
 */
export interface LogEvent {
  /** Internal id of the conversation (never on the wire). */
  conversation: number;
  message: Message;
  change?: Change;
}

/** The position of an event in its conversation's log. */
export function eventSeq(event: LogEvent): number {
  return event.change?.seq ?? event.message.seq;
}

/** A conversation as `welcome` lists it (PROTOCOL.md, Types). */
export interface ConversationView {
  with: Target;
  lastSeq: number;
  deliveredSeq: number;
  readSeq: number;
  unread: number;
  truncated?: true;
}

/** What a device is sent at login: the conversations, and the log ranges to replay. */
export interface CatchUp {
  conversations: ConversationView[];
  /** Where this device's stream of each conversation starts (its catch-up comes after). */
  starts: Map<number, number>;
  ranges: logs.Range[];
  /** The last seq of each conversation. */
  lasts: Map<number, number>;
}

export type Credentials = { name: string; password: string } | { id: number; password: string } | {
  token: string;
};

export interface LoggedIn {
  user: User;
  /**
   * The token to resume with: a new one after a password login, the same after a token login;
   * null for transports that cannot resume (the course protocol).
   */
  token: string | null;
  /** The device: the token's digest in hex; null for a course connection (one per login). */
  device: string | null;
  sessionId: number;
}

export function toMessage(row: q.MessageRow): Message {
  return {
    id: row.id,
    seq: row.seq,
    from: { id: row.senderId, name: row.senderName },
    to: row.groupId !== null ? { group: row.groupId } : { user: row.recipientId! },
    text: row.text,
    at: row.at.toISOString(),
    ...(row.clientId !== null ? { clientId: row.clientId } : {}),
    ...(row.editedAt !== null && !row.deleted ? { editedAt: row.editedAt.toISOString() } : {}),
    ...(row.deleted ? { deleted: true as const, text: "" } : {}),
  };
}

export function toEvent(row: q.MessageRow | logs.EventRow): LogEvent {
  const event: LogEvent = { conversation: row.conversationId, message: toMessage(row) };
  if ("change" in row && row.change !== null) {
    event.change = { kind: row.change, seq: row.eventSeq };
  }
  return event;
}

const notFoundUser = (id: number) =>
  new ChatError("not_found", `No user has id ${id}: check the id`);
const notFoundGroup = (id: number) =>
  new ChatError("not_found", `No group has id ${id}: check the id`);

export interface ChatOptions {
  sql: Sql;
  /**
   * A client of one connection for batches of sends, which it runs in the order they were sent
   * (Outbox). Without it, sends go through `sql` one batch at a time.
   */
  sendSql?: Sql;
  bus: Bus;
  accounts: Accounts;
  node: presence.NodeIdentity;
  loginPolicy: presence.LoginPolicy;
  log: Logger;
  /** Failed logins, keyed by name and by client address. */
  loginFailures: SlidingWindow;
  /** Registrations, keyed by client address. */
  registrations: SlidingWindow;
  /** Most events of one conversation replayed at login (SYNC_LIMIT). */
  syncLimit: number;
}

const shuttingDown = () =>
  new ChatError("unavailable", "This node is shutting down: reconnect to another node");

const rateLimited = (waitMs: number, what: string) =>
  new ChatError("rate_limited", `Too many ${what}: retry in ${Math.ceil(waitMs / 1000)} s`, waitMs);

export class Chat {
  readonly accounts: Accounts;
  /** Search, unfriend, blocks, leaving groups, typing. */
  readonly people: People;
  readonly #sql: Sql;
  readonly #bus: Bus;
  readonly #node: presence.NodeIdentity;
  readonly #policy: presence.LoginPolicy;
  readonly #log: Logger;
  readonly #loginFailures: SlidingWindow;
  readonly #outbox: Outbox;
  readonly #cursors: CursorBatcher;
  readonly #syncLimit: number;
  readonly #deliveryHandlers: ((items: Delivery[]) => void)[] = [];
  readonly #registrations: SlidingWindow;
  #loginsClosed = false;
  #loginsRunning = 0;
  #loginsSettled: (() => void) | undefined;
  /**
   * Sessions to end whose delete failed (the database was away when their socket closed). Their
   * rows would keep their users online for as long as this node lives, since no reaper touches a
   * live node's sessions; `endLeftSessions` tries them again on every heartbeat.
   */
  readonly #leftSessions = new Set<number>();

  constructor(options: ChatOptions) {
    this.#loginFailures = options.loginFailures;
    this.#outbox = new Outbox(
      options.sendSql
        ? { sql: options.sendSql, ordered: true, log: options.log }
        : { sql: options.sql, log: options.log },
      (stored) => this.#committed(stored),
    );
    this.#cursors = new CursorBatcher(options.sql, undefined, options.log);
    this.#syncLimit = options.syncLimit;
    this.#registrations = options.registrations;
    this.#sql = options.sql;
    this.#bus = options.bus;
    this.accounts = options.accounts;
    this.#node = options.node;
    this.#policy = options.loginPolicy;
    this.#log = options.log;
    this.people = new People(options.sql, (...events) => this.#tell(...events));
  }

  /** Publishes after commit; a lost notification is recovered by the resync, so it never fails a request. */
  #tell(...events: BusEvent[]): Promise<void> {
    return this.#bus.publish(...events).catch((error) =>
      this.#log.warn("bus.publish_failed", { error, kind: events[0]?.type })
    );
  }

  /** Registers a user; `address` is the client's, for the per-address throttle. */
  async register(name: unknown, password: unknown, address: string): Promise<User> {
    // Input that breaks the rules is refused before it counts against the address.
    const account = Accounts.newAccount(name, password);
    const wait = this.#registrations.wait(address);
    if (wait > 0) throw rateLimited(wait, "registrations from your address");
    this.#registrations.record(address);
    return await this.accounts.register(account);
  }

  /**
   * The user these credentials name. Failures are counted per name and per client address; past
   * the limit every attempt, right or wrong, answers `rate_limited` until the window moves on.
   */
  async authenticate(credentials: Credentials, address: string): Promise<User> {
    const keys = [`addr:${address}`];
    if ("name" in credentials && typeof credentials.name === "string") {
      keys.push(`name:${credentials.name.toLowerCase()}`);
    } else if ("id" in credentials) {
      keys.push(`id:${credentials.id}`);
    }
    const wait = Math.max(...keys.map((k) => this.#loginFailures.wait(k)));
    if (wait > 0) throw rateLimited(wait, "failed logins");
    try {
      return "token" in credentials
        ? await this.accounts.authenticateToken(credentials.token)
        : await this.accounts.authenticate(
          "id" in credentials ? credentials.id : credentials.name,
          credentials.password,
        );
    } catch (error) {
      if (error instanceof ChatError && error.code === "bad_credentials") {
        for (const key of keys) this.#loginFailures.record(key);
      }
      throw error;
    }
  }

  /**
   * Checks credentials and opens a session on this node under the login policy. A session is
   * tied to its device (token): a password login over WebSocket gets its new token first, so that
   * the same device can later resume through any node even while its old session lingers.
   */
  async login(
    credentials: Credentials,
    transport: presence.Transport,
    address: string,
  ): Promise<LoggedIn> {
    if (this.#loginsClosed) throw shuttingDown();
    this.#loginsRunning++;
    try {
      return await this.#login(credentials, transport, address);
    } finally {
      if (--this.#loginsRunning === 0) this.#loginsSettled?.();
    }
  }

  async #login(
    credentials: Credentials,
    transport: presence.Transport,
    address: string,
  ): Promise<LoggedIn> {
    const user = await this.authenticate(credentials, address);
    // Only WebSocket clients can resume with a token; a course client over TCP cannot use one.
    const token = "token" in credentials
      ? credentials.token
      : transport === "ws"
      ? Accounts.newToken()
      : null;
    if (this.#loginsClosed) throw shuttingDown();
    const opened = await presence.openSession(
      this.#sql,
      this.#node,
      user.id,
      transport,
      this.#policy,
      token === null ? null : Accounts.device(token),
    );
    if (!opened) {
      throw new ChatError(
        "already_online",
        "This account is already online elsewhere: log out there first",
      );
    }
    if (opened === "node_unregistered") {
      throw new ChatError("unavailable", "This node is rejoining the cluster: retry in a moment");
    }
    if (opened.replaced.length > 0) {
      this.#tell({
        type: "kick",
        sessions: opened.replaced.map((r) => r.id),
        nodes: [...new Set(opened.replaced.map((r) => r.node))],
      });
    }
    if (opened.cameOnline) this.#tell({ type: "presence", user: user.id, online: true });
    if (token !== null && !("token" in credentials)) {
      try {
        await this.accounts.issueToken(user.id, token);
      } catch (error) {
        await this.endSession(opened.sessionId).catch(() => {});
        throw error;
      }
    }
    return {
      user,
      token,
      device: token === null ? null : Accounts.deviceOf(token),
      sessionId: opened.sessionId,
    };
  }

  /**
   * The drain's first step: every later login is refused (`unavailable`), and this resolves once
   * the logins already under way have finished, so that their sessions exist to be ended.
   */
  closeLogins(): Promise<void> {
    this.#loginsClosed = true;
    if (this.#loginsRunning === 0) return Promise.resolve();
    return new Promise((resolve) => this.#loginsSettled = resolve);
  }

  /** Ends a session (socket closed, logout, or drain); tells contacts when it was the last one. */
  async endSession(sessionId: number): Promise<void> {
    let offline: number | null;
    try {
      offline = await presence.closeSession(this.#sql, sessionId);
    } catch (error) {
      this.#leftSessions.add(sessionId);
      throw error;
    }
    this.#leftSessions.delete(sessionId);
    if (offline !== null) this.#tell({ type: "presence", user: offline, online: false });
  }

  /** Ends the sessions whose delete failed before; returns how many are still left. */
  async endLeftSessions(): Promise<number> {
    for (const sessionId of [...this.#leftSessions]) await this.endSession(sessionId);
    return this.#leftSessions.size;
  }

  async logout(sessionId: number, token: string | null): Promise<void> {
    if (token) await this.accounts.revokeToken(token);
    await this.endSession(sessionId);
  }

  /** Publishes presence-offline for users who lost their last session some other way (reaper, reset). */
  wentOffline(users: readonly number[]): Promise<void> {
    if (users.length === 0) return Promise.resolve();
    // One publish for them all: a drain or a reaped node may leave thousands offline at once.
    // Resolves once handed to the bus (never rejects): the drain waits for it before any socket
    // hears 1001, so that contacts hear the offline before the online of the reconnect.
    return this.#tell(...users.map((user) => ({ type: "presence" as const, user, online: false })));
  }

  async overview(
    userId: number,
  ): Promise<{ friends: q.FriendRow[]; groups: q.GroupRow[]; blocked: number[] }> {
    const [friends, groups, blocked] = await Promise.all([
      q.friendsOf(this.#sql, userId),
      q.groups(this.#sql, { member: userId }),
      this.people.blocked(userId),
    ]);
    return { friends, groups, blocked };
  }

  async addFriend(userId: number, friendId: number): Promise<q.FriendRow> {
    if (friendId === userId) {
      throw new ChatError("bad_frame", 'Invalid field "user": you cannot befriend yourself');
    }
    const friend = await q.friend(this.#sql, friendId);
    if (!friend) throw notFoundUser(friendId);
    if (await this.people.befriend(userId, friendId)) {
      this.#tell({ type: "friend", user: userId, friend: friendId });
    }
    return friend;
  }

  async createGroup(userId: number, name: unknown, description: unknown = ""): Promise<q.GroupRow> {
    const id = await q.createGroup(
      this.#sql,
      userId,
      validate(groupName, "name", name),
      validate(groupDescription, "description", description),
    );
    const [group] = await q.groups(this.#sql, { group: id });
    return group;
  }

  async joinGroup(userId: number, groupId: number): Promise<q.GroupRow> {
    const result = await q.joinGroup(this.#sql, groupId, userId);
    if (result === "missing") throw notFoundGroup(groupId);
    if (result === "joined") this.#tell({ type: "member", group: groupId, user: userId });
    const [group] = await q.groups(this.#sql, { group: groupId });
    return group;
  }

  /** `post` for a caller that needs only the message. */
  async send(
    userId: number,
    to: Target,
    text: unknown,
    clientId?: string,
    signal?: AbortSignal,
  ): Promise<Message> {
    return (await this.post(userId, to, text, clientId, signal)).message;
  }

  /**
   * Appends a message to its conversation's log (through the outbox, which commits many
   * together), then tells the nodes of every participant, the sender's other devices included;
   * `session`, the sending socket's, gets no push (its reply is `sent`). A retry with the same
   * `clientId` returns the first message and stores nothing. A `signal` aborted before the
   * message's batch begins stores nothing and rejects with the signal's reason.
   */
  async post(
    userId: number,
    to: Target,
    text: unknown,
    clientId?: string,
    signal?: AbortSignal,
    session?: number,
  ): Promise<LogEvent> {
    const body = validate(messageText, "text", text);
    const stored = await this.#outbox.store(
      { senderId: userId, to, text: body, clientId: clientId ?? null },
      signal,
      session,
    );
    if (stored.ok) return toEvent(stored.row);
    if (stored.reason === "no_user") throw notFoundUser((to as { user: number }).user);
    if (stored.reason === "no_group") throw notFoundGroup((to as { group: number }).group);
    if (stored.reason === "blocked") throw new ChatError("forbidden", BLOCKED_MESSAGE);
    throw new ChatError(
      "forbidden",
      `You are not a member of group ${(to as { group: number }).group}: join it first`,
    );
  }

  /** Called for every message committed by this node, before other nodes hear of it. */
  onDelivery(handler: (items: Delivery[]) => void): void {
    this.#deliveryHandlers.push(handler);
  }

  #committed(stored: { row: q.MessageRow; recipients: number[]; session?: number }[]): void {
    const items: Delivery[] = stored.filter((s) => s.recipients.length > 0)
      .map((s) => ({
        message: toMessage(s.row),
        conversation: s.row.conversationId,
        recipients: s.recipients,
        ...(s.session !== undefined ? { session: s.session } : {}),
      }));
    if (items.length === 0) return;
    for (const handler of this.#deliveryHandlers) handler(items);
    this.#tell({ type: "messages", origin: this.#node.id, items });
  }

  /** `ack {ids}`: each listed message's conversation, up to its seq; unknown ids are ignored. */
  async ack(userId: number, ids: readonly number[], device: string | null = null): Promise<void> {
    if (ids.length === 0) return;
    await this.#cursors.move({ kind: "ids", user: userId, device, ids: [...new Set(ids)] });
  }

  /** `ack {with, seq}`: this device has the conversation up to `seq`. */
  async ackSeq(userId: number, device: string | null, target: Target, seq: number): Promise<void> {
    await this.#cursors.move({ kind: "ack", user: userId, device, target, seq });
  }

  /** A socket's next request waits for its ack or read: write the queued cursor moves now. */
  hurryCursors(): void {
    this.#cursors.hurry();
  }

  /** Written to a connection without acks (the course protocol): the user has it. */
  async delivered(userId: number, event: LogEvent): Promise<void> {
    await this.#cursors.move({
      kind: "delivered",
      user: userId,
      conversation: event.conversation,
      seq: eventSeq(event),
    });
  }

  /**
   * `read {with, seq}`. When the user's readSeq moved, its other devices (all but `session`) and,
   * in a direct conversation, the other user hear of it.
   */
  async read(
    userId: number,
    device: string | null,
    session: number | null,
    target: Target,
    seq: number,
  ): Promise<void> {
    const outcome = await this.#cursors.move({ kind: "read", user: userId, device, target, seq });
    if (outcome.movedReadSeq !== null) {
      this.#tell({ type: "read", user: userId, with: target, seq: outcome.movedReadSeq, session });
    }
  }

  /**
   * The user's conversations as this device sees them, and what to replay: from the device's own
   * cursor, else from the user's deliveredSeq, at most SYNC_LIMIT events per conversation.
   * `groups` are the user's groups (those without any event have no log yet).
   */
  async catchUp(
    userId: number,
    device: string | null,
    groups: readonly number[],
  ): Promise<CatchUp> {
    const rows = await logs.conversationsOf(this.#sql, userId, device);
    const conversations: ConversationView[] = [];
    const starts = new Map<number, number>();
    const lasts = new Map<number, number>();
    const ranges: logs.Range[] = [];
    const seen = new Set<number>();
    for (const c of rows) {
      let start = Math.min(c.deviceSeq ?? c.deliveredSeq, c.lastSeq);
      const truncated = c.lastSeq - start > this.#syncLimit;
      if (truncated) start = c.lastSeq - this.#syncLimit;
      starts.set(c.id, start);
      lasts.set(c.id, c.lastSeq);
      if (start < c.lastSeq) ranges.push({ conversation: c.id, after: start, upTo: c.lastSeq });
      if (c.groupId !== null) seen.add(c.groupId);
      conversations.push({
        with: c.groupId !== null
          ? { group: c.groupId }
          : { user: c.userA === userId ? c.userB! : c.userA! },
        lastSeq: c.lastSeq,
        deliveredSeq: c.deliveredSeq,
        readSeq: c.readSeq,
        // The sender's own messages never lie beyond its readSeq (sending moves it), so what
        // lies beyond are others' messages, edits and deletions: the last two, and the messages
        // deleted since, are not unread.
        unread: Math.max(0, c.lastSeq - c.readSeq - c.notUnread),
        ...(truncated ? { truncated: true as const } : {}),
      });
    }
    for (const g of groups) {
      if (seen.has(g)) continue;
      conversations.push({
        with: { group: g },
        lastSeq: 0,
        deliveredSeq: 0,
        readSeq: 0,
        unread: 0,
      });
    }
    return { conversations, starts, ranges, lasts };
  }

  /** Events of `ranges`, a page of at most `limit`; in log order, or by id (`byId`). */
  async events(ranges: readonly logs.Range[], limit = 500, byId = false): Promise<LogEvent[]> {
    return (await logs.eventsIn(this.#sql, ranges, limit, byId)).map(toEvent);
  }

  /**
   * Where a connection's stream of `conversation` starts when it first meets it after login: the
   * user's deliveredSeq there (a group joined after login: its lastSeq at the join).
   */
  streamStart(userId: number, conversation: number): Promise<number> {
    return logs.deliveredSeq(this.#sql, userId, conversation);
  }

  /** Messages by id (too large for the bus), with their logs. */
  async eventsById(ids: readonly number[]): Promise<LogEvent[]> {
    return (await logs.messagesById(this.#sql, ids)).map(toEvent);
  }

  /** `message.edit`: the sender changes the text; a new event of the conversation's log. */
  editMessage(userId: number, id: number, text: unknown, session?: number): Promise<LogEvent> {
    const body = validate(messageText, "text", text);
    return this.#change(userId, id, { kind: "edited", text: body }, session);
  }

  /** `message.delete`: the sender deletes it; a new event of the conversation's log. */
  deleteMessage(userId: number, id: number, session?: number): Promise<LogEvent> {
    return this.#change(userId, id, { kind: "deleted" }, session);
  }

  /**
   * Commits a change as an event of the message's log, then tells the nodes of every
   * participant, the sender's other devices included (`session`, the asking socket, gets the
   * reply instead).
   */
  async #change(
    userId: number,
    id: number,
    change: { kind: "edited"; text: string } | { kind: "deleted" },
    session?: number,
  ): Promise<LogEvent> {
    const { row, seq, recipients } = await this.#sql.begin(async (tx) => {
      const head = await edits.visibleMessage(tx, id, userId, true);
      if (!head) throw new ChatError("not_found", `No message has id ${id}: check the id`);
      if (head.senderId !== userId) {
        throw new ChatError(
          "forbidden",
          `Message ${id} is not yours: only its sender can change it`,
        );
      }
      if (head.deleted) {
        throw new ChatError("forbidden", `Message ${id} is deleted: it cannot be changed`);
      }
      const changed = await edits.changeMessage(tx, head, change);
      return { ...changed, recipients: await edits.participants(tx, head) };
    });
    const event = toEvent(row);
    event.change = { kind: change.kind, seq };
    this.#tell({
      type: "change",
      conversation: event.conversation,
      id: row.id,
      change: event.change,
      // Carried whole when small; a node fetches one too large for the bus by its id.
      message: [...event.message.text].length <= 1000 ? event.message : null,
      recipients,
      ...(session !== undefined ? { session } : {}),
    });
    return event;
  }

  /** The current state of message `id`, as an event at `change` (a change too large for the bus). */
  async changedById(conversation: number, id: number, change: Change): Promise<LogEvent | null> {
    const row = await edits.messageById(this.#sql, id);
    return row ? { conversation, message: toMessage(row), change } : null;
  }

  /** `receipts {group}`: every member's deliveredSeq and readSeq. */
  async receipts(userId: number, groupId: number) {
    if (!await q.isMember(this.#sql, groupId, userId)) {
      if (!await q.groupExists(this.#sql, groupId)) throw notFoundGroup(groupId);
      throw new ChatError("forbidden", `You are not a member of group ${groupId}: join it first`);
    }
    return await logs.groupReceipts(this.#sql, groupId);
  }

  async history(
    userId: number,
    withWhom: Target,
    bounds: { before: number | null; after: number | null },
    limit: number,
  ): Promise<Message[]> {
    if ("user" in withWhom) {
      if (!await q.userExists(this.#sql, withWhom.user)) throw notFoundUser(withWhom.user);
      const rows = await q.history(this.#sql, { between: [userId, withWhom.user] }, bounds, limit);
      return rows.map(toMessage);
    }
    if (!await q.isMember(this.#sql, withWhom.group, userId)) {
      if (!await q.groupExists(this.#sql, withWhom.group)) throw notFoundGroup(withWhom.group);
      throw new ChatError(
        "forbidden",
        `You are not a member of group ${withWhom.group}: join it first`,
      );
    }
    return (await q.history(this.#sql, { group: withWhom.group }, bounds, limit)).map(toMessage);
  }

  friend(id: number) {
    return q.friend(this.#sql, id);
  }

  group(id: number) {
    return q.groups(this.#sql, { group: id }).then((g) => g[0] ?? null);
  }

  contactsOf(userId: number) {
    return q.contactsOf(this.#sql, userId);
  }

  isOnline(userId: number) {
    return presence.onlineAmong(this.#sql, [userId]).then((s) => s.has(userId));
  }
}
