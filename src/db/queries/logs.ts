/**
 * @module SQL for conversation logs and cursors: what a user's conversations look like from one
 * device (catch-up at login), the events of a log between two seqs, cursor moves in batches, and
 * group receipts. A log is two tables read by the same (conversation_id, seq) ranges: `messages`
 * (each at the seq it was created) and `message_events` (edits and deletions).
 */
import type { Querier } from "../connect.ts";
import { MESSAGE_COLUMNS, type MessageRow } from "./chat.ts";
import type { ChangeKind } from "./edits.ts";

/** A conversation of a user, with the user's and one device's cursors in it. */
export interface ConversationRow {
  id: number;
  groupId: number | null;
  userA: number | null;
  userB: number | null;
  lastSeq: number;
  deliveredSeq: number;
  readSeq: number;
  /** The device's own cursor; null when the device never acknowledged anything there. */
  deviceSeq: number | null;
  /**
   * Of the events beyond readSeq, those that are not unread messages: edits and deletions, and the
   * messages deleted since (PROTOCOL.md: unread counts no deleted message).
   */
  notUnread: number;
}

/**
 * Every direct conversation of `userId` with at least one event, and every group conversation of
 * its groups (groups without any message yet have no conversation row: the caller adds them).
 * `device` is a token digest in hex, or null for a device without one.
 */
export async function conversationsOf(
  sql: Querier,
  userId: number,
  device: string | null,
): Promise<ConversationRow[]> {
  return [
    ...await sql<ConversationRow[]>`
      select c.id, c.group_id as "groupId", c.user_a as "userA", c.user_b as "userB",
             c.last_seq as "lastSeq", coalesce(u.delivered_seq, 0) as "deliveredSeq",
             coalesce(u.read_seq, 0) as "readSeq", d.seq as "deviceSeq",
             (select count(*) + count(*) filter (where x.kind = 'deleted'
                                                   and dm.seq > coalesce(u.read_seq, 0))
                from message_events x join messages dm on dm.id = x.message_id
               where x.conversation_id = c.id and x.seq > coalesce(u.read_seq, 0))::int
               as "notUnread"
        from (select id from conversations
               where user_a = ${userId} and group_id is null and last_seq > 0
              union
              select id from conversations
               where user_b = ${userId} and group_id is null and last_seq > 0
              union
              select c.id from group_members gm join conversations c on c.group_id = gm.group_id
               where gm.user_id = ${userId}) mine
        join conversations c on c.id = mine.id
        left join user_cursors u on u.user_id = ${userId} and u.conversation_id = c.id
        left join device_cursors d on d.token_hash = decode(${device}, 'hex')
                                  and d.conversation_id = c.id
       order by c.id`,
  ];
}

/** The user's deliveredSeq in `conversation`; 0 without a cursor (there since the beginning). */
export async function deliveredSeq(
  sql: Querier,
  userId: number,
  conversation: number,
): Promise<number> {
  const [row] = await sql<{ seq: number }[]>`
    select delivered_seq as seq from user_cursors
     where user_id = ${userId} and conversation_id = ${conversation}`;
  return row?.seq ?? 0;
}

export interface Range {
  conversation: number;
  /** Events after this seq ... */
  after: number;
  /** ... up to this one, included. */
  upTo: number;
}

/**
 * The events of `ranges`, at most `limit`: in log order (by conversation, then seq), or oldest
 * first across conversations (`byId`, the course protocol's order).
 */
export async function eventsIn(
  sql: Querier,
  ranges: readonly Range[],
  limit: number,
  byId = false,
): Promise<EventRow[]> {
  if (ranges.length === 0) return [];
  // Two logs read by the same ranges: the messages (at the seq they were created) and their edits
  // and deletions (message_events). Each message shows its current state.
  return [
    ...await sql<EventRow[]>`
      with r as (
        select * from unnest(${ranges.map((r) => r.conversation)}::bigint[], ${
      ranges.map((r) => r.after)
    }::bigint[], ${ranges.map((r) => r.upTo)}::bigint[]) as r(c, a, z)),
      e as (
        select m.id as message_id, m.seq, null::text as kind from r
          join messages m on m.conversation_id = r.c and m.seq > r.a and m.seq <= r.z
        union all
        select x.message_id, x.seq, x.kind from r
          join message_events x on x.conversation_id = r.c and x.seq > r.a and x.seq <= r.z)
      select ${MESSAGE_COLUMNS(sql)}, e.kind as change, e.seq as "eventSeq"
        from e join messages m on m.id = e.message_id
        join users u on u.id = m.sender_id
       order by ${byId ? sql`m.id, e.seq` : sql`m.conversation_id, e.seq`}
       limit ${limit}`,
  ];
}

/** An event of a log: a message (`change` null, at its own seq) or a change of one. */
export type EventRow = MessageRow & { change: ChangeKind | null; eventSeq: number };

/** Messages by id (those too large for a bus notification), in id order. */
export async function messagesById(sql: Querier, ids: readonly number[]): Promise<MessageRow[]> {
  return [
    ...await sql<MessageRow[]>`
      select ${MESSAGE_COLUMNS(sql)} from messages m join users u on u.id = m.sender_id
       where m.id = any(${ids as number[]}::bigint[])
       order by m.id`,
  ];
}

/** Of `ids` acknowledged by `users` (pairwise), the conversation and seq of each visible one. */
export async function resolveMessageIds(
  sql: Querier,
  users: readonly number[],
  ids: readonly number[],
): Promise<{ n: number; conversation: number; seq: number }[]> {
  if (ids.length === 0) return [];
  return [
    ...await sql<{ n: number; conversation: number; seq: number }[]>`
      select a.n, m.conversation_id as conversation, m.seq
        from unnest(${users as number[]}::bigint[], ${ids as number[]}::bigint[])
             with ordinality as a(user_id, id, n)
        join messages m on m.id = a.id
        join conversations c on c.id = m.conversation_id
       where c.user_a = a.user_id or c.user_b = a.user_id
          or exists (select 1 from group_members g
                      where g.group_id = c.group_id and g.user_id = a.user_id)`,
  ];
}

/**
 * For each (user, target) pair: whether the user can see that conversation (the other user
 * exists; the user is a member of the group), its id (null before its first event) and last seq.
 */
export async function resolveTargets(
  sql: Querier,
  items: readonly { user: number; other: number | null; group: number | null }[],
): Promise<{ n: number; visible: boolean; conversation: number | null; lastSeq: number }[]> {
  if (items.length === 0) return [];
  return [
    ...await sql<{ n: number; visible: boolean; conversation: number | null; lastSeq: number }[]>`
      select a.n, coalesce(d.id, g.id) as conversation,
             coalesce(d.last_seq, g.last_seq, 0) as "lastSeq",
             case when a.grp is null then exists (select 1 from users where id = a.other)
                  else exists (select 1 from group_members
                                where group_id = a.grp and user_id = a.user_id) end as visible
        from unnest(${items.map((i) => i.user)}::bigint[], ${
      items.map((i) => i.other)
    }::bigint[], ${
      items.map((i) => i.group)
    }::bigint[]) with ordinality as a(user_id, other, grp, n)
        left join conversations d on a.grp is null
              and d.user_a = least(a.user_id, a.other) and d.user_b = greatest(a.user_id, a.other)
        left join conversations g on g.group_id = a.grp
       order by a.n`,
  ];
}

export interface CursorMoves {
  /** (device digest in hex, conversation, seq), one per device and conversation. */
  devices: [string, number, number][];
  /** (user, conversation, deliveredSeq, readSeq), one per user and conversation; 0 = unchanged. */
  users: [number, number, number, number][];
}

/**
 * Moves cursors forward, never back, in one statement; a cursor already at or past its new value
 * is not written. Returns the user cursors whose read_seq moved (as seen before the statement).
 */
export async function moveCursors(
  sql: Querier,
  moves: CursorMoves,
): Promise<{ user: number; conversation: number; readSeq: number }[]> {
  // Rows are locked in one order, (token, conversation) and (user, conversation) ascending, so
  // that two batches (on two nodes) never wait on each other in a cycle.
  const devices = moves.devices.toSorted((x, y) =>
    x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : x[1] - y[1]
  );
  const users = moves.users.toSorted((x, y) => x[0] - y[0] || x[1] - y[1]);
  return [
    ...await sql<{ user: number; conversation: number; readSeq: number }[]>`
      with d as (
        insert into device_cursors as dc (token_hash, conversation_id, seq)
        select decode(t, 'hex'), c, s from unnest(${devices.map((d) => d[0])}::text[], ${
      devices.map((d) => d[1])
    }::bigint[], ${devices.map((d) => d[2])}::bigint[]) as x(t, c, s)
         order by t, c
        on conflict (token_hash, conversation_id) do update set seq = excluded.seq
         where dc.seq < excluded.seq),
      x as (
        select * from unnest(${users.map((u) => u[0])}::bigint[], ${
      users.map((u) => u[1])
    }::bigint[], ${users.map((u) => u[2])}::bigint[], ${
      users.map((u) => u[3])
    }::bigint[]) as x(u, c, delivered, read)),
      before as (
        select x.u, x.c, coalesce(uc.read_seq, 0) as read
          from x left join user_cursors uc on uc.user_id = x.u and uc.conversation_id = x.c),
      moved as (
        insert into user_cursors as uc (user_id, conversation_id, delivered_seq, read_seq)
        select u, c, delivered, read from x order by u, c
        on conflict (user_id, conversation_id) do update
           set delivered_seq = greatest(uc.delivered_seq, excluded.delivered_seq),
               read_seq = greatest(uc.read_seq, excluded.read_seq)
         where uc.delivered_seq < excluded.delivered_seq or uc.read_seq < excluded.read_seq)
      select x.u as user, x.c as conversation, x.read as "readSeq"
        from x join before b on b.u = x.u and b.c = x.c
       where x.read > b.read`,
  ];
}

/** The cursors of every member of a group, in the order members joined. */
export async function groupReceipts(
  sql: Querier,
  groupId: number,
): Promise<{ id: number; deliveredSeq: number; readSeq: number }[]> {
  return [
    ...await sql<{ id: number; deliveredSeq: number; readSeq: number }[]>`
      select gm.user_id as id, coalesce(uc.delivered_seq, 0) as "deliveredSeq",
             coalesce(uc.read_seq, 0) as "readSeq"
        from group_members gm
        left join conversations c on c.group_id = gm.group_id
        left join user_cursors uc on uc.user_id = gm.user_id and uc.conversation_id = c.id
       where gm.group_id = ${groupId}
       order by gm.joined_at, gm.user_id`,
  ];
}

/**
 * Events not yet delivered to any device of a participant, summed over all conversations and
 * participants (the `parley_waiting_messages` gauge): the course's offline messages.
 */
export async function countUndelivered(sql: Querier): Promise<number> {
  const [row] = await sql<{ n: number }[]>`
    select coalesce(sum(c.last_seq - coalesce(uc.delivered_seq, 0)), 0)::bigint as n
      from (select id as conversation_id, user_a as user_id from conversations
             where group_id is null
            union
            select id, user_b from conversations where group_id is null
            union
            select c.id, gm.user_id from conversations c
              join group_members gm on gm.group_id = c.group_id) p
      join conversations c on c.id = p.conversation_id
      left join user_cursors uc on uc.user_id = p.user_id and uc.conversation_id = c.id`;
  return row.n;
}
