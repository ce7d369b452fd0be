/**
 * @module SQL for friends, groups and messages. Presence flags come from the same live-session rule
 * as `user_state` (see presence.ts).
 */
import type { Querier, Sql } from "../connect.ts";
import { CONVERSATION_NAMESPACE, conversationLockKey } from "../locks.ts";

export interface FriendRow {
  id: number;
  name: string;
  online: boolean;
}

export interface MemberRow extends FriendRow {
  role: "creator" | "member";
}

export interface GroupRow {
  id: number;
  name: string;
  description: string;
  members: MemberRow[];
}

export interface MessageRow {
  id: number;
  /** Internal: the conversation whose log holds it. Not on the wire. */
  conversationId: number;
  seq: number;
  senderId: number;
  senderName: string;
  recipientId: number | null;
  groupId: number | null;
  text: string;
  clientId: string | null;
  at: Date;
  /** When it was last edited, if ever. */
  editedAt: Date | null;
  /** Deleted: its text is gone (""). */
  deleted: boolean;
}

/** A live-session test for the user in column `u.id`, as a boolean column. */
const ONLINE = (sql: Querier) =>
  sql`exists (
    select 1 from sessions s join nodes n on n.id = s.node_id and n.epoch = s.epoch
     where s.user_id = u.id and n.expires_at > now())`;

export async function userExists(sql: Querier, id: number): Promise<boolean> {
  return (await sql`select 1 from users where id = ${id}`).length === 1;
}

/** Makes two users friends both ways; true when they were not friends before. */
export async function addFriendship(sql: Querier, a: number, b: number): Promise<boolean> {
  const rows = await sql`
    insert into friends (user_id, friend_id) values (${a}, ${b}), (${b}, ${a})
    on conflict do nothing
    returning 1`;
  return rows.length > 0;
}

export async function friend(sql: Querier, id: number): Promise<FriendRow | null> {
  const [row] = await sql<FriendRow[]>`
    select u.id, u.name, ${ONLINE(sql)} as online from users u where u.id = ${id}`;
  return row ?? null;
}

export async function friendsOf(sql: Querier, userId: number): Promise<FriendRow[]> {
  return [
    ...await sql<FriendRow[]>`
      select u.id, u.name, ${ONLINE(sql)} as online
        from friends f join users u on u.id = f.friend_id
       where f.user_id = ${userId}
       order by u.name`,
  ];
}

/** Friends and group co-members: who sees this user's presence. */
export async function contactsOf(sql: Querier, userId: number): Promise<number[]> {
  const rows = await sql<{ id: number }[]>`
    select friend_id as id from friends where user_id = ${userId}
    union
    select other.user_id from group_members mine
      join group_members other on other.group_id = mine.group_id
     where mine.user_id = ${userId} and other.user_id <> ${userId}`;
  return rows.map((r) => r.id);
}

export async function createGroup(
  sql: Sql,
  creator: number,
  name: string,
  description: string,
): Promise<number> {
  return await sql.begin(async (tx) => {
    const [g] = await tx<{ id: number }[]>`
      insert into groups (name, description, created_by)
      values (${name}, ${description}, ${creator})
      returning id`;
    await tx`insert into group_members (group_id, user_id, role) values (${g.id}, ${creator}, 'creator')`;
    return g.id;
  });
}

/**
 * "joined" (new member), "member" (already one) or "missing" (no such group). A new member's
 * cursors start at the group's lastSeq: earlier messages are history, not catch-up or unread. The
 * join takes the conversation's advisory lock, as a batch of sends does, so a message is either
 * committed before the join (and within lastSeq) or sent to the new member.
 */
export async function joinGroup(
  sql: Sql,
  groupId: number,
  userId: number,
): Promise<"joined" | "member" | "missing"> {
  return await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(${CONVERSATION_NAMESPACE}::int, ${
      conversationLockKey(`g:${groupId}`)
    }::int)`;
    const [row] = await tx<{ joined: boolean }[]>`
      with g as (select id from groups where id = ${groupId}),
           ins as (
             insert into group_members (group_id, user_id, role)
             select id, ${userId}, 'member' from g
             on conflict do nothing
             returning 1)
      select exists (select 1 from ins) as joined from g`;
    if (!row) return "missing";
    if (!row.joined) return "member";
    await tx`
      insert into conversations (group_id) values (${groupId}) on conflict do nothing`;
    await tx`
      insert into user_cursors as uc (user_id, conversation_id, delivered_seq, read_seq)
      select ${userId}, c.id, c.last_seq, c.last_seq from conversations c
       where c.group_id = ${groupId}
      on conflict (user_id, conversation_id) do update
         set delivered_seq = greatest(uc.delivered_seq, excluded.delivered_seq),
             read_seq = greatest(uc.read_seq, excluded.read_seq)`;
    return "joined";
  });
}

export async function isMember(sql: Querier, groupId: number, userId: number): Promise<boolean> {
  return (await sql`
    select 1 from group_members where group_id = ${groupId} and user_id = ${userId}`).length === 1;
}

export async function groupExists(sql: Querier, groupId: number): Promise<boolean> {
  return (await sql`select 1 from groups where id = ${groupId}`).length === 1;
}

/** Groups with their members; all of `userId`'s groups, or the one group `groupId`. */
export async function groups(
  sql: Querier,
  filter: { member: number } | { group: number },
): Promise<GroupRow[]> {
  const gs = "member" in filter
    ? await sql<Omit<GroupRow, "members">[]>`
        select g.id, g.name, g.description
          from group_members m join groups g on g.id = m.group_id
         where m.user_id = ${filter.member}
         order by g.id`
    : await sql<Omit<GroupRow, "members">[]>`
        select id, name, description from groups where id = ${filter.group}`;
  if (gs.length === 0) return [];
  const members = await sql<(MemberRow & { groupId: number })[]>`
    select m.group_id as "groupId", u.id, u.name, m.role, ${ONLINE(sql)} as online
      from group_members m join users u on u.id = m.user_id
     where m.group_id = any(${gs.map((g) => g.id)}::bigint[])
     order by m.group_id, m.joined_at, u.id`;
  const byGroup = new Map<number, MemberRow[]>(gs.map((g) => [g.id, []]));
  for (const { groupId, ...m } of members) byGroup.get(groupId)!.push(m);
  return gs.map((g) => ({ ...g, members: byGroup.get(g.id)! }));
}

export const MESSAGE_COLUMNS = (sql: Querier) =>
  sql`m.id, m.conversation_id as "conversationId", m.seq, m.sender_id as "senderId",
      u.name as "senderName", m.recipient_id as "recipientId", m.group_id as "groupId",
      m.body as text, m.client_id as "clientId", m.created_at as at, m.edited_at as "editedAt",
      m.deleted_at is not null as deleted`;

/** One message to store; `to` is already validated in shape, not yet against the tables. */
export interface NewMessage {
  senderId: number;
  to: { user: number } | { group: number };
  text: string;
  clientId: string | null;
}

/** The advisory lock key of a message's conversation. */
function conversationKey(m: NewMessage): number {
  return "group" in m.to ? conversationLockKey(`g:${m.to.group}`) : conversationLockKey(
    `u:${Math.min(m.senderId, m.to.user)}:${Math.max(m.senderId, m.to.user)}`,
  );
}

export type Stored =
  | { ok: true; row: MessageRow; created: boolean; recipients: number[] }
  | { ok: false; reason: "no_user" | "no_group" | "not_member" | "blocked" };

/** A row of store_messages (migration 0007). */
interface StoredRow {
  n: number;
  outcome: "ok" | "no_user" | "no_group" | "not_member" | "blocked";
  created: boolean | null;
  sameAs: number | null;
  id: number;
  conversationId: number;
  seq: number;
  senderName: string;
  recipientId: number | null;
  groupId: number | null;
  body: string | null;
  at: Date;
  editedAt: Date | null;
  deleted: boolean;
  members: number[] | null;
  deadlocks: number;
}

/**
 * Stores a batch of messages in one statement, store_messages (migration 0007 holds it and says
 * what it does), and gives each message its outcome, in batch order. A message whose (sender,
 * clientId) is already stored is not stored again: its outcome is the first message, with
 * `created: false`. `deadlocks` counts the attempts PostgreSQL ended to break a deadlock before
 * the one that stored the batch.
 *
 * Rows written: one per new message, one per conversation (its last_seq) and one per sender and
 * conversation (the sender's cursor moves to its message); nothing per recipient.
 *
 * Seqs and ids are drawn while the batch holds a transaction-level advisory lock on each of its
 * conversations until commit, so two batches sharing a conversation, on one node or several, run
 * one after the other: a conversation's seq is gapless and grows with commit order, and so do its
 * message ids. The locks are taken in ascending order, so batches never wait on each other in a
 * cycle. Joining a group and blocking take the same lock (joinGroup, people.ts).
 *
 * Outside a transaction the statement commits by itself, before it answers: one round trip, and
 * batches queued on one connection run in the order they were sent.
 */
export async function storeMessages(
  sql: Querier,
  batch: readonly NewMessage[],
): Promise<{ stored: Stored[]; deadlocks: number }> {
  const locks = [...new Set(batch.map(conversationKey))].sort((x, y) => x - y);
  const rows = await sql<StoredRow[]>`
    select n, outcome, created, same_as as "sameAs", id, conversation_id as "conversationId", seq,
           sender_name as "senderName", recipient_id as "recipientId", group_id as "groupId",
           body, at, edited_at as "editedAt", deleted, members, deadlocks
      from store_messages(${CONVERSATION_NAMESPACE}::int, ${locks}::int[],
        ${batch.map((m) => m.senderId)}::bigint[],
        ${batch.map((m) => "user" in m.to ? m.to.user : null)}::bigint[],
        ${batch.map((m) => "group" in m.to ? m.to.group : null)}::bigint[],
        ${batch.map((m) => m.text)}::text[],
        ${batch.map((m) => m.clientId)}::text[])`;
  if (rows.length !== batch.length) throw new Error("store_messages answered for another batch");
  /** Each group's members, carried by the batch's first message there: read before the rest. */
  const members = new Map<number, number[]>();
  const stored: Stored[] = [];
  for (const [i, r] of rows.entries()) {
    const m = batch[i];
    if (r.members && "group" in m.to) members.set(m.to.group, r.members);
    if (r.outcome !== "ok") {
      stored.push({ ok: false, reason: r.outcome });
      continue;
    }
    const recipients = "group" in m.to
      ? members.get(m.to.group)!
      : m.to.user === m.senderId
      ? [m.senderId]
      : [m.to.user, m.senderId];
    if (r.sameAs !== null) {
      const first = stored[r.sameAs - 1] as Extract<Stored, { ok: true }>;
      stored.push({ ok: true, row: first.row, created: false, recipients });
      continue;
    }
    stored.push({
      ok: true,
      created: r.created!,
      recipients,
      row: {
        id: r.id,
        conversationId: r.conversationId,
        seq: r.seq,
        senderId: m.senderId,
        senderName: r.senderName,
        recipientId: r.recipientId,
        groupId: r.groupId,
        text: r.body ?? m.text,
        clientId: m.clientId,
        at: r.at,
        editedAt: r.editedAt,
        deleted: r.deleted,
      },
    });
  }
  return { stored, deadlocks: rows[0]?.deadlocks ?? 0 };
}

/**
 * One page of a conversation's messages, oldest first: the newest `limit` older than `before`, or
 * the oldest `limit` newer than `after` (both: between them). Ids grow with seq within a
 * conversation, so a bound that is a message of this conversation becomes a bound on seq, which
 * the log's index serves; a bound from elsewhere still filters by id.
 */
export async function history(
  sql: Querier,
  conversation: { between: [number, number] } | { group: number },
  bounds: { before: number | null; after: number | null },
  limit: number,
): Promise<MessageRow[]> {
  const where = "group" in conversation
    ? sql`group_id = ${conversation.group}`
    : sql`group_id is null and user_a = ${Math.min(...conversation.between)}
          and user_b = ${Math.max(...conversation.between)}`;
  const before = bounds.before ?? Number.MAX_SAFE_INTEGER;
  const after = bounds.after ?? 0;
  const newest = bounds.after === null;
  const rows = await sql<MessageRow[]>`
    with c as (select id from conversations where ${where}),
    b as (
      select coalesce((select seq from messages where id = ${before}
                        and conversation_id = (select id from c)), ${Number.MAX_SAFE_INTEGER}) as hi,
             coalesce((select seq from messages where id = ${after}
                        and conversation_id = (select id from c)), 0) as lo)
    select ${MESSAGE_COLUMNS(sql)}
      from messages m join users u on u.id = m.sender_id, b
     where m.conversation_id = (select id from c)
       and m.seq < b.hi and m.seq > b.lo and m.id < ${before} and m.id > ${after}
     order by ${newest ? sql`m.seq desc` : sql`m.seq`}
     limit ${limit}`;
  return newest ? [...rows].reverse() : [...rows];
}
