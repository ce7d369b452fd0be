/**
 * @module People (PROTOCOL.md v2): finding users by name, ending a friendship, blocking, leaving a
 * group, and typing notices. Like the rest of the domain it commits first and then tells other
 * nodes through the bus; it never touches a socket.
 */
import type { Sql } from "../db/connect.ts";
import * as q from "../db/queries/people.ts";
import { addFriendship, groupExists, userExists } from "../db/queries/chat.ts";
import type { BusEvent } from "../realtime/bus.ts";
import { ChatError } from "./errors.ts";

export type Target = { user: number } | { group: number };

/** Most users a search returns. */
export const SEARCH_LIMIT = 20;
/** Typing notices of one user in one conversation are passed on at most once per this. */
export const TYPING_INTERVAL_MS = 1000;

/** A name can only hold these: a query with anything else matches nobody. */
const NAME_CHARS = /^[A-Za-z0-9_.-]+$/;

export const BLOCKED_MESSAGE = "This user does not accept your messages";
const blocked = () => new ChatError("forbidden", BLOCKED_MESSAGE);
const notFoundUser = (id: number) =>
  new ChatError("not_found", `No user has id ${id}: check the id`);
const notFoundGroup = (id: number) =>
  new ChatError("not_found", `No group has id ${id}: check the id`);
const notMember = (id: number) =>
  new ChatError("forbidden", `You are not a member of group ${id}: join it first`);
const notYourself = (field: string, what: string) =>
  new ChatError("bad_frame", `Invalid field "${field}": you cannot ${what} yourself`);

/** The conversation a target names, seen from `me`, as a key both sides agree on. */
export function conversationKey(me: number, to: Target): string {
  return "group" in to ? `g:${to.group}` : `u:${Math.min(me, to.user)}:${Math.max(me, to.user)}`;
}

export class People {
  /** When this node last passed on a typing notice, by `user|conversation`. */
  #typingPassed = new Map<string, number>();
  /** The size at which old records are swept: doubles with what is live, so sweeps stay rare. */
  #sweepAt = 10_000;

  constructor(
    private readonly sql: Sql,
    /** Publishes after commit; never throws. */
    private readonly tell: (...events: BusEvent[]) => void,
  ) {}

  async search(me: number, query: unknown): Promise<q.UserRow[]> {
    if (typeof query !== "string" || query.length < 1 || query.length > 32) {
      throw new ChatError("bad_frame", 'Invalid field "query": expected 1 to 32 characters');
    }
    // Taken as given: a character no name can hold matches nobody (no pattern syntax to escape).
    if (!NAME_CHARS.test(query)) return [];
    return await q.searchUsers(this.sql, query.toLowerCase(), me, SEARCH_LIMIT);
  }

  /**
   * Makes the two friends unless either blocks the other (`forbidden`); true when they were not
   * friends before. Under the direct conversation's lock, so a block made meanwhile either comes
   * first and refuses this, or comes after and ends the friendship.
   */
  async befriend(me: number, other: number): Promise<boolean> {
    return await this.sql.begin(async (tx) => {
      await q.lockDirect(tx, me, other);
      if (await q.blockedEitherWay(tx, me, other)) throw blocked();
      return await addFriendship(tx, me, other);
    });
  }

  /** Ends the friendship, if any. `session`: the remover's device asking, told by its reply. */
  async removeFriend(me: number, other: number, session?: number): Promise<void> {
    if (other === me) throw notYourself("user", "unfriend");
    if (!await userExists(this.sql, other)) throw notFoundUser(other);
    if (await q.removeFriendship(this.sql, me, other)) {
      this.tell({ type: "unfriend", user: me, friend: other, session });
    }
  }

  /** Blocks `other` (again: nothing changes) and ends any friendship with it, as friend.remove. */
  async block(me: number, other: number, session?: number): Promise<void> {
    if (other === me) throw notYourself("user", "block");
    const unfriended = await this.sql.begin(async (tx) => {
      await q.lockDirect(tx, me, other);
      if (!await userExists(tx, other)) throw notFoundUser(other);
      await q.addBlock(tx, me, other);
      return await q.removeFriendship(tx, me, other);
    });
    if (unfriended) this.tell({ type: "unfriend", user: me, friend: other, session });
  }

  async unblock(me: number, other: number): Promise<void> {
    if (other === me) throw notYourself("user", "unblock");
    if (!await userExists(this.sql, other)) throw notFoundUser(other);
    await q.removeBlock(this.sql, me, other);
  }

  /** Whom `me` blocks (welcome.blocked). */
  blocked(me: number): Promise<number[]> {
    return q.blockedBy(this.sql, me);
  }

  /** Leaves a group; the group stays, whoever leaves. `session`: the leaver's asking device. */
  /**
   * Leaves a group; the group stays, whoever leaves. `session`: the leaver's asking device. Returns
   * the group's conversation (internal id, null before its first event), whose stream the
   * leaver's devices forget: a later join starts it afresh at the group's lastSeq then.
   */
  async leaveGroup(me: number, group: number, session?: number): Promise<number | null> {
    const result = await q.leaveGroup(this.sql, group, me);
    if (result === "missing") throw notFoundGroup(group);
    if (result === "not_member") throw notMember(group);
    this.tell({
      type: "member.left",
      group,
      user: me,
      conversation: result.conversation,
      session,
    });
    return result.conversation;
  }

  members(group: number): Promise<number[]> {
    return q.memberIds(this.sql, group);
  }

  /**
   * Whether a typing notice from `me` to `to` would be passed on now, by this node's record. The
   * transport asks before spending anything on it: a flood costs one map lookup per frame.
   */
  typingDue(me: number, to: Target, now = Date.now()): boolean {
    const last = this.#typingPassed.get(`${me}|${conversationKey(me, to)}`);
    return last === undefined || now - last >= TYPING_INTERVAL_MS;
  }

  /**
   * Checks a typing notice as `send` would be checked and passes it on, unless one was passed on
   * within TYPING_INTERVAL_MS (then it is dropped silently). The interval is kept per node: one
   * node holds all of a user's sockets under LOGIN_POLICY reject or takeover; under multi, the
   * receiving nodes drop what two nodes passed on within the interval (see the hub), by the
   * time each was passed on.
   */
  async typing(me: number, to: Target): Promise<void> {
    let recipients: number[];
    if ("user" in to) {
      if (to.user === me) throw notYourself("to", "type to");
      if (!await userExists(this.sql, to.user)) throw notFoundUser(to.user);
      if (await q.blockedEitherWay(this.sql, me, to.user)) throw blocked();
      recipients = [to.user];
    } else {
      const members = await q.memberIds(this.sql, to.group);
      if (!members.includes(me)) {
        throw await groupExists(this.sql, to.group) ? notMember(to.group) : notFoundGroup(to.group);
      }
      recipients = members.filter((m) => m !== me);
    }
    const now = Date.now();
    // Checked again after the awaits: another socket of this user may have passed one meanwhile.
    if (!this.typingDue(me, to, now)) return;
    this.#typingPassed.set(`${me}|${conversationKey(me, to)}`, now);
    if (this.#typingPassed.size > this.#sweepAt) this.#sweep(now);
    if (recipients.length > 0) {
      const notice = crypto.randomUUID();
      this.tell({ type: "typing", from: me, to, recipients, at: now, notice });
    }
  }

  /** Forgets records older than the interval: they no longer hold anything back. */
  #sweep(now: number) {
    for (const [key, at] of this.#typingPassed) {
      if (now - at >= TYPING_INTERVAL_MS) this.#typingPassed.delete(key);
    }
    this.#sweepAt = Math.max(10_000, 2 * this.#typingPassed.size);
  }
}
