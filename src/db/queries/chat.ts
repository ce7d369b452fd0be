/**
 * @module SQL for friends, groups and messages. Presence flags come from the same live-session rule
 * as `user_state` (see presence.ts).
 */
import { type Querier, type Sql, transaction } from "../connect.ts";
import { CONVERSATION_NAMESPACE, conversationLockKey } from "../locks.ts";
import { blockedPairs } from "./people.ts";

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
  senderId: number;
  senderName: string;
  recipientId: number | null;
  groupId: number | null;
  text: string;
  clientId: string | null;
  at: Date;
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
  return await transaction(sql, async (tx) => {
    const [g] = await tx<{ id: number }[]>`
      insert into groups (name, description, created_by)
      values (${name}, ${description}, ${creator})
      returning id`;
    await tx`insert into group_members (group_id, user_id, role) values (${g.id}, ${creator}, 'creator')`;
    return g.id;
  });
}

/** "joined" (new member), "member" (already one) or "missing" (no such group). */
export async function joinGroup(
  sql: Querier,
  groupId: number,
  userId: number,
): Promise<"joined" | "member" | "missing"> {
  const [row] = await sql<{ joined: boolean }[]>`
    with g as (select id from groups where id = ${groupId}),
         ins as (
           insert into group_members (group_id, user_id, role)
           select id, ${userId}, 'member' from g
           on conflict do nothing
           returning 1)
    select exists (select 1 from ins) as joined from g`;
  return !row ? "missing" : row.joined ? "joined" : "member";
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

const MESSAGE_COLUMNS = (sql: Querier) =>
  sql`m.id, m.sender_id as "senderId", u.name as "senderName", m.recipient_id as "recipientId",
      m.group_id as "groupId", m.body as text, m.client_id as "clientId", m.created_at as at`;

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

/**
 * Stores a batch of messages in the caller's transaction, in a fixed number of statements
 * whatever the batch size: targets checked, ids drawn, messages and one waiting row per recipient
 * inserted. Each message gets its own outcome. A message whose (sender, clientId) is already
 * stored is not stored again: its outcome is the first message, with `created: false`.
 *
 * Ids are drawn while the batch holds a transaction-level advisory lock on each of its
 * conversations until commit, so two batches sharing a conversation commit in the order they drew
 * its ids, on one node or several: a conversation's ids grow with commit order. The locks are
 * taken in ascending order in one statement, so batches never wait on each other in a cycle.
 */
export async function storeMessages(tx: Querier, batch: readonly NewMessage[]): Promise<Stored[]> {
  const conversations = [...new Set(batch.map(conversationKey))].sort((x, y) => x - y);
  const userIds = [
    ...new Set(batch.flatMap((m) => ["user" in m.to ? [m.to.user] : [], m.senderId].flat())),
  ];
  const groupIds = [...new Set(batch.flatMap((m) => "group" in m.to ? [m.to.group] : []))];
  const direct = batch.flatMap((m, i) =>
    "user" in m.to ? [{ i, from: m.senderId, to: m.to.user }] : []
  );
  // These do not depend on each other's results, so they go out together (postgres.js pipelines
  // them on the transaction's connection) and the server runs them in this order: the
  // conversation locks first, then the ids are drawn under them. A block takes the same lock
  // (people.ts), so the blocks read here are those committed before this batch's messages.
  const [, users, groups, memberRows, idRows, blockedRows] = await Promise.all([
    tx`
      select pg_advisory_xact_lock(${CONVERSATION_NAMESPACE}::int, k)
        from unnest(${conversations}::int[]) with ordinality as c(k, n)
       order by n`,
    tx<
      { id: number; name: string }[]
    >`select id, name from users where id = any(${userIds}::bigint[])`,
    tx<{ id: number }[]>`select id from groups where id = any(${groupIds}::bigint[])`,
    tx<{ groupId: number; userId: number }[]>`
      select group_id as "groupId", user_id as "userId"
        from group_members where group_id = any(${groupIds}::bigint[])`,
    tx<{ id: number }[]>`
      select nextval(pg_get_serial_sequence('messages', 'id')) as id
        from generate_series(1, ${batch.length})`,
    blockedPairs(tx, direct.map((d) => d.from), direct.map((d) => d.to)),
  ]);
  const blocked = new Set(blockedRows.map((r) => direct[r.n - 1].i));
  const names = new Map(users.map((u) => [u.id, u.name]));
  const members = new Map<number, number[]>(groups.map((g) => [g.id, []]));
  for (const m of memberRows) members.get(m.groupId)?.push(m.userId);
  const ids = idRows.map((r) => r.id).sort((x, y) => x - y);

  const outcomes: (Stored | { recipients: number[] })[] = batch.map((m, i) => {
    if ("user" in m.to) {
      if (!names.has(m.to.user)) return { ok: false, reason: "no_user" };
      return blocked.has(i) ? { ok: false, reason: "blocked" } : { recipients: [m.to.user] };
    }
    const group = members.get(m.to.group);
    if (!group) return { ok: false, reason: "no_group" };
    if (!group.includes(m.senderId)) return { ok: false, reason: "not_member" };
    return { recipients: group.filter((u) => u !== m.senderId) };
  });
  const valid = batch.map((m, i) => ({
    m,
    i,
    recipients: (outcomes[i] as { recipients?: number[] }).recipients,
  }))
    .filter((v): v is { m: NewMessage; i: number; recipients: number[] } =>
      v.recipients !== undefined
    );
  if (valid.length === 0) return outcomes as Stored[];

  // One statement stores the messages and, for those not already stored under their clientId,
  // their waiting rows: the waiting rows join on what the insert returned.
  const waitingUsers: number[] = [];
  const waitingIds: number[] = [];
  valid.forEach((v, k) => {
    for (const user of v.recipients) {
      waitingUsers.push(user);
      waitingIds.push(ids[k]);
    }
  });
  const inserted = await tx<{ id: number; at: Date }[]>`
    with stored as (
      insert into messages (id, sender_id, recipient_id, group_id, body, client_id)
      overriding system value
      select * from unnest(
        ${valid.map((_, k) => ids[k])}::bigint[],
        ${valid.map((v) => v.m.senderId)}::bigint[],
        ${valid.map((v) => "user" in v.m.to ? v.m.to.user : null)}::bigint[],
        ${valid.map((v) => "group" in v.m.to ? v.m.to.group : null)}::bigint[],
        ${valid.map((v) => v.m.text)}::text[],
        ${valid.map((v) => v.m.clientId)}::text[])
      on conflict (sender_id, client_id) do nothing
      returning id, created_at),
    waiting as (
      insert into waiting_messages (user_id, message_id)
      select w.user_id, w.message_id
        from unnest(${waitingUsers}::bigint[], ${waitingIds}::bigint[]) as w(user_id, message_id)
        join stored on stored.id = w.message_id)
    select id, created_at as at from stored`;
  const insertedAt = new Map(inserted.map((r) => [r.id, r.at]));

  const retried: typeof valid = [];
  valid.forEach((v, k) => {
    const at = insertedAt.get(ids[k]);
    if (!at) {
      retried.push(v);
      return;
    }
    const m = v.m;
    const row: MessageRow = {
      id: ids[k],
      senderId: m.senderId,
      senderName: names.get(m.senderId)!,
      recipientId: "user" in m.to ? m.to.user : null,
      groupId: "group" in m.to ? m.to.group : null,
      text: m.text,
      clientId: m.clientId,
      at,
    };
    outcomes[v.i] = { ok: true, row, created: true, recipients: v.recipients };
  });
  if (retried.length > 0) {
    // A retry of a clientId already stored: its outcome is the message stored first.
    const firsts = await tx<MessageRow[]>`
      select ${MESSAGE_COLUMNS(tx)}
        from unnest(${retried.map((v) => v.m.senderId)}::bigint[], ${
      retried.map((v) => v.m.clientId)
    }::text[])
             as k(sender_id, client_id)
        join messages m on m.sender_id = k.sender_id and m.client_id = k.client_id
        join users u on u.id = m.sender_id`;
    for (const v of retried) {
      const row = firsts.find((r) => r.senderId === v.m.senderId && r.clientId === v.m.clientId)!;
      outcomes[v.i] = { ok: true, row, created: false, recipients: v.recipients };
    }
  }
  return outcomes as Stored[];
}

/** Of messages `ids`, those still waiting for each of `users`, as (user, message) pairs. */
export async function waitingAmong(
  sql: Querier,
  ids: readonly number[],
  users: readonly number[],
): Promise<(MessageRow & { userId: number })[]> {
  return [
    ...await sql<(MessageRow & { userId: number })[]>`
      select w.user_id as "userId", ${MESSAGE_COLUMNS(sql)}
        from waiting_messages w
        join messages m on m.id = w.message_id
        join users u on u.id = m.sender_id
       where w.message_id = any(${ids as number[]}::bigint[])
         and w.user_id = any(${users as number[]}::bigint[])
       order by m.id`,
  ];
}

/** Messages waiting for `userId`, oldest first, after `afterId`. */
export async function waitingFor(
  sql: Querier,
  userId: number,
  afterId: number,
  limit: number,
): Promise<MessageRow[]> {
  return [
    ...await sql<MessageRow[]>`
      select ${MESSAGE_COLUMNS(sql)}
        from waiting_messages w
        join messages m on m.id = w.message_id
        join users u on u.id = m.sender_id
       where w.user_id = ${userId} and w.message_id > ${afterId}
       order by w.message_id
       limit ${limit}`,
  ];
}

/** Deletes the waiting rows of many (user, message) pairs in one statement. */
export async function deleteWaitingPairs(
  sql: Querier,
  users: readonly number[],
  messages: readonly number[],
): Promise<void> {
  if (users.length === 0) return;
  await sql`
    delete from waiting_messages w
     using unnest(${users as number[]}::bigint[], ${messages as number[]}::bigint[]) as a(user_id, message_id)
     where w.user_id = a.user_id and w.message_id = a.message_id`;
}

export async function countWaiting(sql: Querier): Promise<number> {
  const [row] = await sql<{ n: number }[]>`select count(*) as n from waiting_messages`;
  return row.n;
}

/** One page of a conversation, newest `limit` before `before`, returned oldest first. */
export async function history(
  sql: Querier,
  conversation: { between: [number, number] } | { group: number },
  before: number | null,
  limit: number,
): Promise<MessageRow[]> {
  const beforeId = before ?? Number.MAX_SAFE_INTEGER;
  const rows = "group" in conversation
    ? await sql<MessageRow[]>`
        select ${MESSAGE_COLUMNS(sql)} from messages m join users u on u.id = m.sender_id
         where m.group_id = ${conversation.group} and m.id < ${beforeId}
         order by m.id desc limit ${limit}`
    : await sql<MessageRow[]>`
        select ${MESSAGE_COLUMNS(sql)} from messages m join users u on u.id = m.sender_id
         where m.group_id is null
           and least(m.sender_id, m.recipient_id) = ${Math.min(...conversation.between)}
           and greatest(m.sender_id, m.recipient_id) = ${Math.max(...conversation.between)}
           and m.id < ${beforeId}
         order by m.id desc limit ${limit}`;
  return [...rows].reverse();
}
