/**
 * @module The terminal client, like the course's ChatClient: a menu (login, register, quit), then
 * commands until `loginout` or the end of input. It speaks only PROTOCOL.md, prints what arrives as
 * it arrives, acks every message it printed, and after a lost connection (a node's 1001, a dropped
 * network) logs in again with its token, resending an unanswered message under the same clientId.
 */
import { type Command, helpText, parseCommand } from "./commands.ts";
import { type Closed, Connection, ConnectionError, type Frame, ServerError } from "./connection.ts";
import {
  type Conversation,
  formatGroup,
  formatMessage,
  formatOverview,
  formatUnread,
  formatWaiting,
  type Friend,
  type Group,
  MENU,
  type Message,
  type User,
  who,
} from "./format.ts";
import { ABORTED, type Terminal } from "./terminal.ts";

export interface ClientOptions {
  url: string;
  terminal: Terminal;
}

const HISTORY_LIMIT = 20;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 15_000;
/** How long a send waits for the connection to come back before giving up. */
const RESEND_WAIT_MS = 20_000;
const PRINTED_IDS_KEPT = 10_000;
/** A typing notice is said once per this, per sender and conversation (PROTOCOL.md: 5 s). */
const TYPING_SHOWN_MS = 5000;

/** Exponential backoff with equal jitter: half of each step fixed, half random. */
export function backoffMs(attempt: number, random = Math.random): number {
  const step = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** attempt);
  return Math.round(step / 2 + random() * (step / 2));
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
  });

type Outcome = "menu" | "eof";
type Target = Message["to"];

/** One logged-in stretch, from welcome to logout, a 4001, or the end of input. */
interface Session {
  user: User;
  token: string;
  /** Aborted when the session ends while the prompt waits (4001, token revoked). */
  ended: AbortController;
  /** Set while the connection is being restored. */
  reconnecting: Promise<void> | null;
  /** Messages pushed between the welcome and the pong that follows the replay. */
  replay: Message[] | null;
}

export class ChatClient {
  #url: string;
  #t: Terminal;
  #conn: Connection | null = null;
  #session: Session | null = null;
  #friends = new Map<number, Friend>();
  #groups = new Map<number, Group>();
  /** Message ids printed already: a message pushed twice (after a reconnect) prints once. */
  #printed = new Set<number>();
  /** Per conversation ("u5", "g3"): the highest seq printed and not yet acknowledged. */
  #acks = new Map<string, { with: Target; seq: number }>();
  /** When "is typing" was last printed, by sender and conversation. */
  #typing = new Map<string, number>();
  #ackTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(options: ClientOptions) {
    this.#url = options.url;
    this.#t = options.terminal;
  }

  /** Runs until quit or the end of input; resolves with the exit code. */
  async run(): Promise<number> {
    try {
      while (true) {
        this.#t.print(MENU);
        const choice = await this.#t.readLine("choice: ");
        if (choice === null || choice === ABORTED) return 0;
        switch (choice.trim()) {
          case "1":
            if (await this.#login() === "eof") return 0;
            break;
          case "2":
            if (await this.#register() === "eof") return 0;
            break;
          case "3":
          case "quit":
            return 0;
          case "":
            break;
          default:
            this.#t.print(`Unknown choice "${choice.trim()}": type 1, 2 or 3`);
        }
      }
    } finally {
      this.#flushAcks();
      this.#session?.ended.abort();
      this.#session = null;
      await this.#conn?.close(1000, "Client quit");
      this.#t.close();
    }
  }

  async #credentials(): Promise<{ name: string; password: string } | null> {
    const name = await this.#t.readLine("name: ");
    if (name === null || name === ABORTED) return null;
    const password = await this.#t.readLine("password: ", { secret: true });
    if (password === null || password === ABORTED) return null;
    return { name: name.trim(), password };
  }

  /** The socket for requests before login: the open one, or a new one (an idle one is closed). */
  async #preLogin(): Promise<Connection | null> {
    if (this.#conn?.isOpen) return this.#conn;
    try {
      this.#conn = await Connection.open(this.#url);
      this.#conn.onPush = (frame) => this.#pushed(frame);
      return this.#conn;
    } catch (error) {
      this.#t.print((error as Error).message);
      return null;
    }
  }

  async #register(): Promise<Outcome | null> {
    const credentials = await this.#credentials();
    if (!credentials) return "eof";
    const conn = await this.#preLogin();
    if (!conn) return null;
    try {
      const reply = await conn.request({ type: "register", ...credentials });
      const user = reply.user as User;
      this.#t.print(`registered ${user.name}: your id is ${user.id}; keep it, and log in with 1`);
    } catch (error) {
      this.#t.print(`Cannot register: ${(error as Error).message}`);
    }
    return null;
  }

  async #login(): Promise<Outcome | null> {
    const credentials = await this.#credentials();
    if (!credentials) return "eof";
    const conn = await this.#preLogin();
    if (!conn) return null;
    let welcome: Frame;
    try {
      welcome = await conn.request({ type: "login", ...credentials });
    } catch (error) {
      this.#t.print(`Cannot log in: ${(error as Error).message}`);
      return null;
    }
    return await this.#run(conn, welcome);
  }

  #welcomed(conn: Connection, welcome: Frame) {
    const session = this.#session!;
    session.user = welcome.user as User;
    session.token = welcome.token as string;
    this.#friends = new Map((welcome.friends as Friend[]).map((f) => [f.id, f]));
    this.#groups = new Map((welcome.groups as Group[]).map((g) => [g.id, g]));
    conn.closed.then((closed) => this.#closed(conn, closed));
  }

  /** The logged-in part: overview, waiting messages, help, then commands. */
  async #run(conn: Connection, welcome: Frame): Promise<Outcome> {
    const session: Session = {
      user: welcome.user as User,
      token: welcome.token as string,
      ended: new AbortController(),
      reconnecting: null,
      replay: [],
    };
    this.#session = session;
    this.#welcomed(conn, welcome);
    this.#t.print(
      formatOverview(session.user, [...this.#friends.values()], [...this.#groups.values()]),
    );
    const unread = formatUnread(
      (welcome.conversations ?? []) as Conversation[],
      (target) => "group" in target ? this.#groupName(target.group) : this.#userName(target.user),
    );
    if (unread !== null) this.#t.print(unread);
    // The waiting messages follow the welcome. The server runs one socket's requests in order and
    // answers login only after pushing them, so a ping sent now is answered after the last one.
    try {
      await conn.request({ type: "ping" });
    } catch {
      // Lost already: what was not acked comes again after the reconnection.
    }
    // Caught up conversation by conversation; shown oldest first across them, as the course did.
    const waiting = (session.replay ?? []).sort((x, y) => x.id - y.id);
    session.replay = null;
    this.#t.print(formatWaiting(waiting));
    for (const message of waiting) this.#ack(message);
    this.#t.print(helpText());

    try {
      while (true) {
        const line = await this.#t.readLine(`${session.user.name}> `, {
          signal: session.ended.signal,
        });
        if (line === ABORTED) return "menu";
        if (line === null) return "eof";
        if (line.trim() === "") continue;
        const parsed = parseCommand(line);
        if (!parsed.ok) {
          this.#t.print(parsed.error);
          continue;
        }
        if (await this.#execute(parsed.command) === "menu") return "menu";
        if (session.ended.signal.aborted) return "menu";
      }
    } finally {
      this.#flushAcks();
      session.ended.abort();
      if (this.#session === session) this.#session = null;
    }
  }

  async #execute(command: Command): Promise<Outcome | null> {
    try {
      switch (command.kind) {
        case "help":
          this.#t.print(helpText());
          return null;
        case "chat":
        case "groupchat": {
          const to: Target = command.kind === "chat"
            ? { user: command.user }
            : { group: command.group };
          const message = await this.#send(to, command.text);
          const where = "user" in to ? this.#userName(to.user) : this.#groupName(to.group);
          this.#t.print(`sent to ${where}, message ${message.id}`);
          return null;
        }
        case "addfriend": {
          const reply = await this.#request({ type: "friend.add", user: command.user });
          const friend = reply.friend as Friend;
          this.#friends.set(friend.id, friend);
          this.#t.print(
            `${who(friend)} is now your friend (${friend.online ? "online" : "offline"})`,
          );
          return null;
        }
        case "creategroup": {
          const reply = await this.#request({
            type: "group.create",
            name: command.name,
            description: command.description,
          });
          const group = reply.group as Group;
          this.#groups.set(group.id, group);
          this.#t.print(
            `created group ${group.id} "${group.name}"; others join it with addgroup:${group.id}`,
          );
          return null;
        }
        case "addgroup": {
          const reply = await this.#request({ type: "group.join", group: command.group });
          const group = reply.group as Group;
          this.#groups.set(group.id, group);
          this.#t.print(`joined group ${group.id}:\n${formatGroup(group)}`);
          return null;
        }
        case "history":
        case "ghistory": {
          const target: Target = command.kind === "history"
            ? { user: command.user }
            : { group: command.group };
          const reply = await this.#request({
            type: "history",
            with: target,
            limit: HISTORY_LIMIT,
          });
          const messages = reply.messages as Message[];
          const name = "user" in target
            ? this.#userName(target.user)
            : this.#groupName(target.group);
          this.#t.print(
            messages.length === 0 ? `no messages with ${name} yet` : [
              messages.length === 1
                ? `the last message with ${name}:`
                : `the last ${messages.length} messages with ${name}:`,
              ...messages.map(formatMessage),
            ].join("\n"),
          );
          return null;
        }
        case "edit": {
          const reply = await this.#request({
            type: "message.edit",
            id: command.id,
            text: command.text,
          });
          this.#t.print(
            `edited message ${command.id}:\n${formatMessage(reply.message as Message)}`,
          );
          return null;
        }
        case "delete": {
          await this.#request({ type: "message.delete", id: command.id });
          this.#t.print(`deleted message ${command.id}`);
          return null;
        }
        case "find": {
          const reply = await this.#request({ type: "user.search", query: command.prefix });
          const users = reply.users as User[];
          this.#t.print(
            users.length === 0 ? `no one's name starts with "${command.prefix}"` : [
              `people whose name starts with "${command.prefix}" (addfriend:<userid> to add):`,
              ...users.map((u) =>
                `  ${u.id} ${u.name}${this.#friends.has(u.id) ? " (friend)" : ""}`
              ),
            ].join("\n"),
          );
          return null;
        }
        case "unfriend": {
          const name = this.#userName(command.user);
          await this.#request({ type: "friend.remove", user: command.user });
          const was = this.#friends.delete(command.user);
          this.#t.print(was ? `${name} is no longer your friend` : `${name} was not your friend`);
          return null;
        }
        case "block": {
          const name = this.#userName(command.user);
          await this.#request({ type: "user.block", user: command.user });
          this.#friends.delete(command.user);
          this.#t.print(
            `blocked ${name}: no messages or friend requests either way until unblock:${command.user}`,
          );
          return null;
        }
        case "unblock": {
          await this.#request({ type: "user.unblock", user: command.user });
          this.#t.print(`unblocked ${this.#userName(command.user)}`);
          return null;
        }
        case "leavegroup": {
          const name = this.#groupName(command.group);
          await this.#request({ type: "group.leave", group: command.group });
          this.#groups.delete(command.group);
          this.#t.print(`left ${name}; addgroup:${command.group} joins it again`);
          return null;
        }
        case "loginout":
          await this.#logout();
          return "menu";
      }
    } catch (error) {
      this.#t.print(`error: ${(error as Error).message}`);
      return null;
    }
  }

  /** A request on the logged-in connection; waits for a reconnection that is under way. */
  async #request(frame: Frame): Promise<Frame> {
    const session = this.#session;
    if (session?.reconnecting) await session.reconnecting;
    if (!this.#conn?.isOpen || this.#session !== session) {
      throw new ConnectionError("Not connected: try again when the connection is back");
    }
    return await this.#conn.request(frame);
  }

  /**
   * Sends a message. If the connection drops before `sent`, the message may or may not be stored;
   * it is sent again, with the same clientId, once logged in again, and the server answers with the
   * stored one rather than storing a copy.
   */
  async #send(to: Target, text: string): Promise<Message> {
    const clientId = crypto.randomUUID();
    const deadline = Date.now() + RESEND_WAIT_MS;
    while (true) {
      try {
        const reply = await this.#request({ type: "send", to, text, clientId });
        // Its own event too: acknowledged, so that the next login does not replay it here.
        this.#ack(reply.message as Message);
        return reply.message as Message;
      } catch (error) {
        if (error instanceof ServerError && error.code === "rate_limited") {
          await sleep(error.retryAfterMs ?? 1000);
          continue;
        }
        if (!(error instanceof ConnectionError) || Date.now() > deadline) throw error;
        const session = this.#session;
        if (!session || session.ended.signal.aborted) throw error;
        // The close event may come just after the failed request: give it a moment to start the
        // reconnection, then wait for that.
        await sleep(100, session.ended.signal);
        if (!session.reconnecting) throw error;
      }
    }
  }

  async #logout() {
    const conn = this.#conn;
    const session = this.#session;
    if (session) session.ended.abort();
    this.#session = null;
    if (conn?.isOpen) {
      try {
        await conn.request({ type: "logout" });
      } catch {
        // The server ends the session when the socket closes anyway.
      }
    }
    await conn?.close(1000, "Logged out");
    this.#conn = null;
    this.#t.print("logged out");
  }

  #closed(conn: Connection, closed: Closed) {
    const session = this.#session;
    if (conn !== this.#conn || !session || session.ended.signal.aborted) return;
    if (closed.code === 4001) {
      this.#t.print(
        "Your account was opened elsewhere, so this client was disconnected and will not " +
          "reconnect by itself: back to the menu",
      );
      this.#endSession(session);
      return;
    }
    if (closed.code === 1000 || closed.code === 1008 || closed.code === 1009) {
      this.#t.print(
        `The server closed the connection (${closed.code} ${closed.reason}): back to the menu`,
      );
      this.#endSession(session);
      return;
    }
    this.#t.print(
      `Connection lost (${closed.code}${closed.reason ? ` ${closed.reason}` : ""}): reconnecting…`,
    );
    session.reconnecting = this.#reconnect(session).finally(() => session.reconnecting = null);
  }

  #endSession(session: Session) {
    session.ended.abort();
    if (this.#session === session) this.#session = null;
    this.#conn = null;
  }

  /** Logs in again with the token, with backoff, until it works or the session ends. */
  async #reconnect(session: Session): Promise<void> {
    for (let attempt = 0; !session.ended.signal.aborted; attempt++) {
      await sleep(backoffMs(attempt), session.ended.signal);
      if (session.ended.signal.aborted) return;
      let conn: Connection | null = null;
      try {
        conn = await Connection.open(this.#url);
        conn.onPush = (frame) => this.#pushed(frame);
        const welcome = await conn.request({ type: "login", token: session.token });
        if (session.ended.signal.aborted) {
          await conn.close();
          return;
        }
        this.#conn = conn;
        this.#welcomed(conn, welcome);
        this.#t.print(`reconnected as ${who(session.user)}`);
        return;
      } catch (error) {
        await conn?.close();
        if (error instanceof ServerError && error.code === "bad_credentials") {
          this.#t.print("Your session has ended: log in again");
          this.#endSession(session);
          return;
        }
        // Unreachable, or `already_online` while the old session is still being ended: retry.
      }
    }
  }

  #pushed(frame: Frame) {
    switch (frame.type) {
      case "message": {
        const message = frame.message as Message;
        if (this.#printed.has(message.id)) {
          this.#ack(message); // Printed before; the ack may have been lost.
          return;
        }
        const replay = this.#session?.replay;
        if (replay) {
          if (!replay.some((m) => m.id === message.id)) replay.push(message);
          this.#remember(message.id);
          return;
        }
        this.#remember(message.id);
        this.#typing.delete(
          `${message.from.id}|${"group" in message.to ? `g${message.to.group}` : "u"}`,
        );
        this.#t.print(formatMessage(message));
        this.#ack(message);
        return;
      }
      case "presence": {
        const user = frame.user as number;
        const online = frame.online as boolean;
        const friend = this.#friends.get(user);
        if (friend) friend.online = online;
        for (const group of this.#groups.values()) {
          for (const member of group.members) if (member.id === user) member.online = online;
        }
        this.#t.print(`* ${this.#userName(user)} is ${online ? "online" : "offline"}`);
        return;
      }
      case "friend.added": {
        const friend = frame.friend as Friend;
        this.#friends.set(friend.id, friend);
        this.#t.print(`* ${who(friend)} added you as a friend`);
        return;
      }
      case "message.edited": {
        const message = frame.message as Message;
        this.#t.print(`* message ${message.id} was edited:\n${formatMessage(message)}`);
        this.#ackEvent(this.#withOf(message), frame.seq as number);
        return;
      }
      case "message.deleted":
        this.#t.print(`* message ${frame.id as number} was deleted`);
        this.#ackEvent(frame.with as Target, frame.seq as number);
        return;
      case "friend.removed": {
        const user = frame.user as number;
        const name = this.#userName(user);
        this.#friends.delete(user);
        this.#t.print(`* ${name} is no longer your friend`);
        return;
      }
      case "group.member.left": {
        const groupId = frame.group as number;
        const user = frame.user as number;
        const name = this.#groupName(groupId);
        if (user === this.#session?.user.id) {
          this.#groups.delete(groupId);
          this.#t.print(`* you left ${name} on another device`);
          return;
        }
        const who = this.#userName(user);
        const group = this.#groups.get(groupId);
        if (group) group.members = group.members.filter((m) => m.id !== user);
        this.#t.print(`* ${who} left ${name}`);
        return;
      }
      case "typing": {
        const from = frame.from as number;
        const where = frame.with as Target;
        const key = `${from}|${"group" in where ? `g${where.group}` : "u"}`;
        const now = Date.now();
        // Said once while someone keeps typing: the server passes on one notice a second.
        if (now - (this.#typing.get(key) ?? 0) < TYPING_SHOWN_MS) return;
        this.#typing.set(key, now);
        this.#t.print(
          `* ${this.#userName(from)} is typing${
            "group" in where ? ` in ${this.#groupName(where.group)}` : ""
          }…`,
        );
        return;
      }
      case "group.member": {
        const group = this.#groups.get(frame.group as number);
        const member = frame.member as Group["members"][number];
        if (group && !group.members.some((m) => m.id === member.id)) group.members.push(member);
        this.#t.print(`* ${who(member)} joined ${this.#groupName(frame.group as number)}`);
        return;
      }
      case "error":
        this.#t.print(`error: ${frame.message}`);
        return;
    }
  }

  #remember(id: number) {
    this.#printed.add(id);
    if (this.#printed.size > PRINTED_IDS_KEPT) {
      this.#printed.delete(this.#printed.values().next().value!);
    }
  }

  /**
   * A message printed (or sent): this device has its conversation up to its seq, and the user has
   * read it there. Events of one conversation arrive in seq order, so one cursor per conversation
   * says it all; acks go out in batches, one per turn of the event loop.
   */
  #ack(message: Message) {
    this.#ackEvent(this.#withOf(message), message.seq);
  }

  /** The conversation of `message` as this user names it. */
  #withOf(message: Message): Target {
    if ("group" in message.to) return message.to;
    const me = this.#session?.user.id;
    return { user: message.from.id === me ? message.to.user : message.from.id };
  }

  /** An event printed at `seq` of the conversation `withWhom` (an edit or a deletion too). */
  #ackEvent(withWhom: Target, seq: number) {
    const key = "group" in withWhom ? `g${withWhom.group}` : `u${withWhom.user}`;
    const had = this.#acks.get(key);
    if (!had || had.seq < seq) this.#acks.set(key, { with: withWhom, seq });
    this.#ackTimer ??= setTimeout(() => this.#flushAcks(), 0);
  }

  #flushAcks() {
    clearTimeout(this.#ackTimer);
    this.#ackTimer = undefined;
    for (const [key, cursor] of this.#acks) {
      if (!this.#conn?.isOpen) return;
      if (!this.#conn.send({ type: "ack", ...cursor })) return;
      this.#conn.send({ type: "read", ...cursor });
      this.#acks.delete(key);
    }
  }

  #userName(id: number): string {
    const friend = this.#friends.get(id);
    if (friend) return who(friend);
    if (this.#session?.user.id === id) return who(this.#session.user);
    for (const group of this.#groups.values()) {
      const member = group.members.find((m) => m.id === id);
      if (member) return who(member);
    }
    return `user ${id}`;
  }

  #groupName(id: number): string {
    const group = this.#groups.get(id);
    return group ? `group ${id} "${group.name}"` : `group ${id}`;
  }
}
