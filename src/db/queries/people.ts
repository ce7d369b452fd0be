/**
 * @module SQL for people (PROTOCOL.md v2): search by name, ending a friendship, blocks, leaving a
 * group.
 */
import type { Querier } from "../connect.ts";
import { CONVERSATION_NAMESPACE, directConversationLockKey } from "../locks.ts";

export interface UserRow {
  id: number;
  name: string;
}

/**
 * Users whose lowercased name starts with `prefix` (already lowercased and made only of characters
 * a name can hold), in byte order of the lowercased name, without `exclude`. The range on
 * lower(name) with the pattern operators is what users_name_prefix_idx serves, in its order: no
 * LIKE, so `_` and `.` are plain characters. Every character a name can hold lowercases below
 * `{`, so `prefix || '{'` is above every name that has the prefix.
 */
export async function searchUsers(
  sql: Querier,
  prefix: string,
  exclude: number,
  limit: number,
): Promise<UserRow[]> {
  return [...await searchUsersQuery(sql, prefix, exclude, limit)];
}

/** The statement of `searchUsers`, not yet run: tests EXPLAIN it to see the index at work. */
export function searchUsersQuery(sql: Querier, prefix: string, exclude: number, limit: number) {
  return sql<UserRow[]>`
    select id, name from users
     where lower(name) ~>=~ ${prefix} and lower(name) ~<~ ${prefix + "{"} and id <> ${exclude}
     order by lower(name) using ~<~
     limit ${limit}`;
}

/** Ends a friendship both ways; true when they were friends. */
export async function removeFriendship(sql: Querier, a: number, b: number): Promise<boolean> {
  const rows = await sql`
    delete from friends
     where (user_id = ${a} and friend_id = ${b}) or (user_id = ${b} and friend_id = ${a})
    returning 1`;
  return rows.length > 0;
}

/**
 * Holds the direct conversation's advisory lock until the transaction ends: the one storeMessages
 * takes, so that a block and a message in that conversation commit one after the other and a
 * message is never stored after the block that refuses it.
 */
export async function lockDirect(tx: Querier, a: number, b: number): Promise<void> {
  await tx`select pg_advisory_xact_lock(${CONVERSATION_NAMESPACE}::int, ${
    directConversationLockKey(a, b)
  }::int)`;
}

/** `user` blocks `blocked`; true when it did not already. */
export async function addBlock(tx: Querier, user: number, blocked: number): Promise<boolean> {
  const rows = await tx`
    insert into blocks (user_id, blocked_id) values (${user}, ${blocked})
    on conflict do nothing returning 1`;
  return rows.length > 0;
}

export async function removeBlock(sql: Querier, user: number, blocked: number): Promise<boolean> {
  const rows = await sql`
    delete from blocks where user_id = ${user} and blocked_id = ${blocked} returning 1`;
  return rows.length > 0;
}

/** Whether either of the two blocks the other. */
export async function blockedEitherWay(sql: Querier, a: number, b: number): Promise<boolean> {
  const rows = await sql`
    select 1 from blocks
     where (user_id = ${a} and blocked_id = ${b}) or (user_id = ${b} and blocked_id = ${a})`;
  return rows.length > 0;
}

/** Whom `user` blocks, by id. */
export async function blockedBy(sql: Querier, user: number): Promise<number[]> {
  const rows = await sql<{ id: number }[]>`
    select blocked_id as id from blocks where user_id = ${user} order by blocked_id`;
  return rows.map((r) => r.id);
}

/**
 * "not_member" (the group exists) or "missing" (no such group), or the group's conversation (its
 * internal id, null before its first event) when the user left.
 */
export async function leaveGroup(
  sql: Querier,
  group: number,
  user: number,
): Promise<{ conversation: number | null } | "not_member" | "missing"> {
  const [row] = await sql<{ gone: boolean; conversation: number | null }[]>`
    with g as (select id from groups where id = ${group}),
         del as (
           delete from group_members where group_id = ${group} and user_id = ${user}
           returning 1)
    select exists (select 1 from del) as gone,
           (select id from conversations where group_id = ${group}) as conversation
      from g`;
  return !row ? "missing" : row.gone ? { conversation: row.conversation } : "not_member";
}

/** The members of a group, by id; empty when there is no such group. */
export async function memberIds(sql: Querier, group: number): Promise<number[]> {
  const rows = await sql<{ id: number }[]>`
    select user_id as id from group_members where group_id = ${group}`;
  return rows.map((r) => r.id);
}
