/**
 * @module SQL for edits and deletions (PROTOCOL.md v2): each is an event of the message's
 * conversation log, with the next seq of that log, and the message row takes its new state.
 */
import type { Querier } from "../connect.ts";
import { CONVERSATION_NAMESPACE, conversationLockKey } from "../locks.ts";
import { MESSAGE_COLUMNS, type MessageRow } from "./chat.ts";

export type ChangeKind = "edited" | "deleted";

/** What deciding about a change needs to know of a message. */
export interface MessageHead {
  id: number;
  conversationId: number;
  senderId: number;
  recipientId: number | null;
  groupId: number | null;
  deleted: boolean;
}

/**
 * The message `id` if `user` can see it (a participant of its direct conversation, or a member of
 * its group now), else null. With `lock`, first takes the conversation's advisory lock, the one a
 * batch of sends takes while it draws seqs (storeMessages), and reads the row after it: so the
 * change's seq is drawn in turn with the sends, and a concurrent change of the same message is
 * seen.
 */
export async function visibleMessage(
  tx: Querier,
  id: number,
  user: number,
  lock = false,
): Promise<MessageHead | null> {
  const read = () =>
    tx<MessageHead[]>`
      select m.id, m.conversation_id as "conversationId", m.sender_id as "senderId",
             m.recipient_id as "recipientId", m.group_id as "groupId",
             m.deleted_at is not null as deleted
        from messages m
       where m.id = ${id}
         and (case when m.group_id is null then ${user} in (m.sender_id, m.recipient_id)
                   else exists (select 1 from group_members g
                                 where g.group_id = m.group_id and g.user_id = ${user}) end)`;
  const [head] = await read();
  if (!head || !lock) return head ?? null;
  const key = head.groupId !== null
    ? `g:${head.groupId}`
    : `u:${Math.min(head.senderId, head.recipientId!)}:${
      Math.max(head.senderId, head.recipientId!)
    }`;
  await tx`select pg_advisory_xact_lock(${CONVERSATION_NAMESPACE}::int, ${
    conversationLockKey(key)
  }::int)`;
  const [again] = await read();
  return again ?? null;
}

/**
 * Appends the change of message `head` to its conversation's log and gives the message its new
 * state: `text` for an edit (edited_at is the transaction's time, the one every copy shows), or
 * deleted with its text gone. Call under the lock `visibleMessage` takes. Returns the message as
 * it now is and the event's seq.
 */
export async function changeMessage(
  tx: Querier,
  head: MessageHead,
  change: { kind: "edited"; text: string } | { kind: "deleted" },
): Promise<{ row: MessageRow; seq: number }> {
  const [{ seq }] = await tx<{ seq: number }[]>`
    update conversations set last_seq = last_seq + 1 where id = ${head.conversationId}
    returning last_seq as seq`;
  await tx`
    insert into message_events (conversation_id, seq, message_id, kind)
    values (${head.conversationId}, ${seq}, ${head.id}, ${change.kind})`;
  const [row] = change.kind === "edited"
    ? await tx<MessageRow[]>`
      with m as (
        update messages set body = ${change.text}, edited_at = now() where id = ${head.id}
        returning *)
      select ${MESSAGE_COLUMNS(tx)} from m join users u on u.id = m.sender_id`
    : await tx<MessageRow[]>`
      with m as (
        update messages set body = '', deleted_at = now() where id = ${head.id}
        returning *)
      select ${MESSAGE_COLUMNS(tx)} from m join users u on u.id = m.sender_id`;
  return { row, seq };
}

/** Everyone a change in this message's conversation is pushed to: both users, or the members. */
export async function participants(sql: Querier, head: MessageHead): Promise<number[]> {
  if (head.groupId === null) return [...new Set([head.senderId, head.recipientId!])];
  const rows = await sql<{ id: number }[]>`
    select user_id as id from group_members where group_id = ${head.groupId}`;
  return rows.map((r) => r.id);
}

/** A message's current state by id (a change whose message did not fit on the bus). */
export async function messageById(sql: Querier, id: number): Promise<MessageRow | null> {
  const [row] = await sql<MessageRow[]>`
    select ${MESSAGE_COLUMNS(sql)} from messages m join users u on u.id = m.sender_id
     where m.id = ${id}`;
  return row ?? null;
}
