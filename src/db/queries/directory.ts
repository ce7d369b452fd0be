/**
 * @module The presence directory the NATS bus routes by: which nodes hold sessions of the users,
 * groups or contacts an event is for. The sessions table is the directory; nothing else
 * is written for it, so it is as true as presence itself.
 */
import type { Querier } from "../connect.ts";

export interface AudienceKeys {
  users: readonly number[];
  groups: readonly number[];
  contactsOf: readonly number[];
}

/** One row per (kind, key, node): kind `u`ser, `g`roup, or `c`ontacts of a user. */
export interface DirectoryRow {
  kind: "u" | "g" | "c";
  key: number;
  node: string;
}

/**
 * The nodes holding sessions for each key, in one round trip. Sessions of dead nodes are included:
 * a dead node's subject has no subscriber, so what is sent there goes nowhere.
 */
export async function nodesFor(sql: Querier, keys: AudienceKeys): Promise<DirectoryRow[]> {
  const rows = await sql<{ kind: DirectoryRow["kind"]; key: string; node: string }[]>`
    select 'u' as kind, user_id as key, node_id as node
      from sessions where user_id = any(${keys.users as number[]}::bigint[])
    union
    select 'g', gm.group_id, s.node_id
      from group_members gm join sessions s on s.user_id = gm.user_id
     where gm.group_id = any(${keys.groups as number[]}::bigint[])
    union
    select 'c', f.user_id, s.node_id
      from friends f join sessions s on s.user_id = f.friend_id
     where f.user_id = any(${keys.contactsOf as number[]}::bigint[])
    union
    select 'c', mine.user_id, s.node_id
      from group_members mine
      join group_members other on other.group_id = mine.group_id and other.user_id <> mine.user_id
      join sessions s on s.user_id = other.user_id
     where mine.user_id = any(${keys.contactsOf as number[]}::bigint[])`;
  // int8 arrives as a string from postgres.js.
  return rows.map((r) => ({ kind: r.kind, key: Number(r.key), node: r.node }));
}
