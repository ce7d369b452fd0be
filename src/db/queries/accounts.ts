/**
 * @module SQL for users and login tokens.
 */
import type { Querier } from "../connect.ts";

export interface UserRow {
  id: number;
  name: string;
}

/** The new user, or null when the name is taken (names are unique without regard to case). */
export async function insertUser(
  sql: Querier,
  name: string,
  passwordHash: string,
): Promise<UserRow | null> {
  const [user] = await sql<UserRow[]>`
    insert into users (name, password_hash) values (${name}, ${passwordHash})
    on conflict do nothing
    returning id, name`;
  return user ?? null;
}

export async function findUserByName(
  sql: Querier,
  name: string,
): Promise<(UserRow & { passwordHash: string }) | null> {
  const [row] = await sql<(UserRow & { passwordHash: string })[]>`
    select id, name, password_hash as "passwordHash" from users where lower(name) = lower(${name})`;
  return row ?? null;
}

export async function findUserById(
  sql: Querier,
  id: number,
): Promise<(UserRow & { passwordHash: string }) | null> {
  const [row] = await sql<(UserRow & { passwordHash: string })[]>`
    select id, name, password_hash as "passwordHash" from users where id = ${id}`;
  return row ?? null;
}

export async function insertToken(sql: Querier, digest: Uint8Array, userId: number, ttlMs: number) {
  await sql`
    insert into auth_tokens (token_hash, user_id, expires_at)
    values (${digest}, ${userId}, now() + ${ttlMs} * interval '1 millisecond')`;
}

export async function findUserByToken(sql: Querier, digest: Uint8Array): Promise<UserRow | null> {
  const [user] = await sql<UserRow[]>`
    select u.id, u.name
      from auth_tokens t join users u on u.id = t.user_id
     where t.token_hash = ${digest} and t.expires_at > now()`;
  return user ?? null;
}

/** Deletes a token and the cursors of the device it was. */
export async function deleteToken(sql: Querier, digest: Uint8Array): Promise<void> {
  await sql`
    with gone as (delete from auth_tokens where token_hash = ${digest} returning token_hash)
    delete from device_cursors where token_hash in (select token_hash from gone)`;
}

/** Deletes expired tokens and their devices' cursors; returns how many tokens. */
export async function deleteExpiredTokens(sql: Querier): Promise<number> {
  const [row] = await sql<{ n: number }[]>`
    with gone as (delete from auth_tokens where expires_at <= now() returning token_hash),
    cursors as (delete from device_cursors where token_hash in (select token_hash from gone))
    select count(*)::int as n from gone`;
  return row.n;
}
