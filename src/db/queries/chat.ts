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
  return await transaction(sql, async (tx) => {
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
  return await transaction(sql, async (tx) => {
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

/**
 * Thrown when a message of the batch met a (sender, clientId) already stored: one the batch did not
 * look for, or one committed by another batch after this one looked. Its seq would be a gap, so
 * the whole batch rolls back and is stored again, looking.
 */
export class BatchRaced extends Error {
  override name = "BatchRaced";
}

interface ConversationRow {
  id: number;
  userA: number | null;
  userB: number | null;
  groupId: number | null;
  lastSeq: number;
}

/**
 * Stores a batch of messages in the caller's transaction, in a fixed number of statements
 * whatever the batch size: one pipelined round trip that locks, reads and draws ids, then one
 * statement that writes. Each message gets its own outcome. A message whose (sender, clientId) is
 * already stored is not stored again: its outcome is the first message, with `created: false`.
 *
 * Finding those first messages costs as much as a quarter of the database's time per batch (an
 * index probe per clientId, planned afresh), and almost every batch has none: a client resends
 * only after a reconnect or an `unavailable`. So with `findRetries` false the batch does not look:
 * if one of its clientIds was stored before, the write stores fewer rows than it drew seqs for,
 * and BatchRaced rolls the whole transaction back, to be run again with `findRetries` true.
 *
 * Rows written: one per new message, one per conversation (its last_seq) and one per sender and
 * conversation (the sender's cursor moves to its message); nothing per recipient.
 *
 * Seqs and ids are drawn while the batch holds a transaction-level advisory lock on each of its
 * conversations until commit, so two batches sharing a conversation, on one node or several, run
 * one after the other: a conversation's seq is gapless and grows with commit order, and so do its
 * message ids. The locks are taken in ascending order in one statement, so batches never wait on
 * each other in a cycle. Joining a group takes the same lock (joinGroup).
 */
export async function storeMessages(
  tx: Querier,
  batch: readonly NewMessage[],
  findRetries: boolean,
): Promise<Stored[]> {
  const locks = [...new Set(batch.map(conversationKey))].sort((x, y) => x - y);
  const userIds = [
    ...new Set(batch.flatMap((m) => ["user" in m.to ? [m.to.user] : [], m.senderId].flat())),
  ];
  const groupIds = [...new Set(batch.flatMap((m) => "group" in m.to ? [m.to.group] : []))];
  const pairKey = (a: number, b: number) => `${Math.min(a, b)}:${Math.max(a, b)}`;
  const pairs = [
    ...new Set(batch.flatMap((m) => "user" in m.to ? [pairKey(m.senderId, m.to.user)] : [])),
  ].map((k) => k.split(":").map(Number));
  const retryKeys = findRetries ? batch.filter((m) => m.clientId !== null) : [];
  const direct = batch.flatMap((m, i) =>
    "user" in m.to ? [{ i, from: m.senderId, to: m.to.user }] : []
  );
  // These do not depend on each other's results, so they go out together (postgres.js pipelines
  // them on the transaction's connection) and the server runs them in this order: the
  // conversation locks first, then a missing conversation row is made (an existing one is not
  // written), then everything is read under the locks. A block takes the same lock (people.ts),
  // so the blocks read here are those committed before this batch's messages.
  const [, , , users, groups, memberRows, idRows, conversationRows, , firsts, , blockedRows] =
    await Promise.all([
      tx`
      select pg_advisory_xact_lock(${CONVERSATION_NAMESPACE}::int, k)
        from unnest(${locks}::int[]) with ordinality as c(k, n)
       order by n`,
      pairs.length === 0 ? [] : tx`
      insert into conversations (user_a, user_b)
      select p.a, p.b from unnest(${pairs.map((p) => p[0])}::bigint[], ${
        pairs.map((p) => p[1])
      }::bigint[]) as p(a, b)
       where exists (select 1 from users where id = p.a)
         and exists (select 1 from users where id = p.b)
      on conflict do nothing`,
      groupIds.length === 0 ? [] : tx`
      insert into conversations (group_id)
      select id from groups where id = any(${groupIds}::bigint[])
      on conflict do nothing`,
      tx<
        { id: number; name: string }[]
      >`select id, name from users where id = any(${userIds}::bigint[])`,
      groupIds.length === 0
        ? []
        : tx<{ id: number }[]>`select id from groups where id = any(${groupIds}::bigint[])`,
      groupIds.length === 0 ? [] : tx<{ groupId: number; userId: number }[]>`
      select group_id as "groupId", user_id as "userId"
        from group_members where group_id = any(${groupIds}::bigint[])`,
      tx<{ id: number }[]>`
      select nextval(pg_get_serial_sequence('messages', 'id')) as id
        from generate_series(1, ${batch.length})`,
      tx<ConversationRow[]>`
      select c.id, c.user_a as "userA", c.user_b as "userB", c.group_id as "groupId",
             c.last_seq as "lastSeq"
        from conversations c
       where c.group_id = any(${groupIds}::bigint[])
          or (c.user_a, c.user_b) in (
            select * from unnest(${pairs.map((p) => p[0])}::bigint[], ${
        pairs.map((p) => p[1])
      }::bigint[]))`,
      // Planned afresh each time: a connection's first batches cache a generic plan made while
      // `messages` was small (a hash join over a scan of the whole table), and keep it, so each
      // batch then scans all of `messages`, more as the table grows (5.0 ms a batch at 20,000
      // rows in the bench, more than the insert; 2.4 ms planned afresh, from the real keys).
      retryKeys.length === 0 ? [] : tx`set local plan_cache_mode = force_custom_plan`,
      retryKeys.length === 0 ? [] : tx<MessageRow[]>`
      select ${MESSAGE_COLUMNS(tx)}
        from unnest(${retryKeys.map((m) => m.senderId)}::bigint[], ${
        retryKeys.map((m) => m.clientId)
      }::text[]) as k(sender_id, client_id)
        join messages m on m.sender_id = k.sender_id and m.client_id = k.client_id
        join users u on u.id = m.sender_id`,
      retryKeys.length === 0 ? [] : tx`set local plan_cache_mode = auto`,
      blockedPairs(tx, direct.map((d) => d.from), direct.map((d) => d.to)),
    ]);
  const blocked = new Set(blockedRows.map((r) => direct[r.n - 1].i));
  const names = new Map(users.map((u) => [u.id, u.name]));
  const members = new Map<number, number[]>(groups.map((g) => [g.id, []]));
  for (const m of memberRows) members.get(m.groupId)?.push(m.userId);
  const ids = idRows.map((r) => r.id).sort((x, y) => x - y);
  const conversationOf = new Map<string, ConversationRow>();
  for (const c of conversationRows as ConversationRow[]) {
    conversationOf.set(c.groupId !== null ? `g${c.groupId}` : `u${c.userA}:${c.userB}`, c);
  }
  const stored = new Map<string, MessageRow>();
  for (const r of firsts as MessageRow[]) stored.set(`${r.senderId}/${r.clientId}`, r);

  const outcomes: (Stored | null)[] = batch.map(() => null);
  /** New messages, in batch order, with their conversation and recipients. */
  const fresh: { i: number; m: NewMessage; c: ConversationRow; recipients: number[] }[] = [];
  /** Messages repeating a clientId that an earlier message of this batch carries. */
  const repeats: { i: number; of: number; recipients: number[] }[] = [];
  const pending = new Map<string, number>();
  batch.forEach((m, i) => {
    let recipients: number[];
    let c: ConversationRow | undefined;
    if ("user" in m.to) {
      if (!names.has(m.to.user)) return outcomes[i] = { ok: false, reason: "no_user" };
      if (blocked.has(i)) return outcomes[i] = { ok: false, reason: "blocked" };
      recipients = m.to.user === m.senderId ? [m.senderId] : [m.to.user, m.senderId];
      c = conversationOf.get(`u${pairKey(m.senderId, m.to.user)}`);
    } else {
      const group = members.get(m.to.group);
      if (!group) return outcomes[i] = { ok: false, reason: "no_group" };
      if (!group.includes(m.senderId)) return outcomes[i] = { ok: false, reason: "not_member" };
      recipients = group;
      c = conversationOf.get(`g${m.to.group}`);
    }
    const key = m.clientId === null ? null : `${m.senderId}/${m.clientId}`;
    const first = key === null ? undefined : stored.get(key);
    if (first) return outcomes[i] = { ok: true, row: first, created: false, recipients };
    if (key !== null && pending.has(key)) {
      return repeats.push({ i, of: pending.get(key)!, recipients });
    }
    if (key !== null) pending.set(key, i);
    fresh.push({ i, m, c: c!, recipients });
  });
  if (fresh.length === 0) return finish(outcomes, repeats);

  const seqs = fresh.map((f) => ++f.c.lastSeq);
  const bumped = [...new Set(fresh.map((f) => f.c))];
  // The sender's cursors: readSeq moves to its highest new seq in each conversation of the
  // batch. deliveredSeq moves there too, but only over the sender's own run of messages: an
  // event of someone else just before it may not have reached any of the sender's devices (it
  // was committed while the sender wrote), and a device without a cursor of its own starts from
  // deliveredSeq, so moving past it would lose it. [sender, conversation, seq, run start]
  const senderSeq = new Map<string, [number, number, number, number]>();
  /** Per conversation, the sender of its latest message in the batch and where its run began. */
  const runs = new Map<number, { sender: number; start: number }>();
  fresh.forEach((f, k) => {
    // Within a conversation the batch's seqs are consecutive, in batch order.
    const run = runs.get(f.c.id);
    const start = run && run.sender === f.m.senderId ? run.start : seqs[k];
    runs.set(f.c.id, { sender: f.m.senderId, start });
    senderSeq.set(`${f.m.senderId}/${f.c.id}`, [f.m.senderId, f.c.id, seqs[k], start]);
  });
  // In ascending (user, conversation) order, as the ack batch locks cursors (moveCursors): a plan
  // that looks each one up by its key, the usual one on a large table, locks them in this order.
  const cursors = [...senderSeq.values()].sort((x, y) => x[0] - y[0] || x[1] - y[1]);
  const inserted = await tx<{ id: number; at: Date }[]>`
    with bump as (
      update conversations c set last_seq = b.last
        from unnest(${bumped.map((c) => c.id)}::bigint[], ${
    bumped.map((c) => c.lastSeq)
  }::bigint[]) as b(id, last)
       where c.id = b.id),
    stored as (
      insert into messages (id, conversation_id, seq, sender_id, recipient_id, group_id, body,
                            client_id)
      overriding system value
      select * from unnest(
        ${fresh.map((_, k) => ids[k])}::bigint[],
        ${fresh.map((f) => f.c.id)}::bigint[],
        ${seqs}::bigint[],
        ${fresh.map((f) => f.m.senderId)}::bigint[],
        ${fresh.map((f) => "user" in f.m.to ? f.m.to.user : null)}::bigint[],
        ${fresh.map((f) => "group" in f.m.to ? f.m.to.group : null)}::bigint[],
        ${fresh.map((f) => f.m.text)}::text[],
        ${fresh.map((f) => f.m.clientId)}::text[])
      on conflict (sender_id, client_id) do nothing
      returning id, created_at),
    x as (
      select * from unnest(${cursors.map((c) => c[0])}::bigint[], ${
    cursors.map((c) => c[1])
  }::bigint[], ${cursors.map((c) => c[2])}::bigint[], ${
    cursors.map((c) => c[3])
  }::bigint[]) as x(u, c, s, run)),
    sender as (
      update user_cursors uc
         set read_seq = greatest(uc.read_seq, x.s),
             delivered_seq = case when uc.delivered_seq >= x.run - 1
                                  then greatest(uc.delivered_seq, x.s) else uc.delivered_seq end
        from x
       where uc.user_id = x.u and uc.conversation_id = x.c
         and (uc.read_seq < x.s or (uc.delivered_seq >= x.run - 1 and uc.delivered_seq < x.s))),
    first_cursor as (
      insert into user_cursors as uc (user_id, conversation_id, delivered_seq, read_seq)
      select x.u, x.c, case when x.run <= 1 then x.s else 0 end, x.s from x
       where not exists (
         select 1 from user_cursors o where o.user_id = x.u and o.conversation_id = x.c)
      on conflict (user_id, conversation_id) do update
         set read_seq = greatest(uc.read_seq, excluded.read_seq))
    select id, created_at as at from stored`;
  if (inserted.length !== fresh.length) {
    throw new BatchRaced("a clientId of the batch was stored before");
  }
  const insertedAt = new Map(inserted.map((r) => [r.id, r.at]));
  fresh.forEach((f, k) => {
    const m = f.m;
    outcomes[f.i] = {
      ok: true,
      created: true,
      recipients: f.recipients,
      row: {
        id: ids[k],
        conversationId: f.c.id,
        seq: seqs[k],
        senderId: m.senderId,
        senderName: names.get(m.senderId)!,
        recipientId: "user" in m.to ? m.to.user : null,
        groupId: "group" in m.to ? m.to.group : null,
        text: m.text,
        clientId: m.clientId,
        at: insertedAt.get(ids[k])!,
        editedAt: null,
        deleted: false,
      },
    };
  });
  return finish(outcomes, repeats);
}

function finish(
  outcomes: (Stored | null)[],
  repeats: { i: number; of: number; recipients: number[] }[],
): Stored[] {
  for (const r of repeats) {
    const first = outcomes[r.of] as Extract<Stored, { ok: true }>;
    outcomes[r.i] = { ok: true, row: first.row, created: false, recipients: r.recipients };
  }
  return outcomes as Stored[];
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
