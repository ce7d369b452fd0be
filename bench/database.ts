/**
 * @module The bench's PostgreSQL: a server from BENCH_DATABASE_URL or DATABASE_URL, else the test
 * fixture's providers; a fresh database per scenario; users, tokens and groups seeded in bulk; and
 * the `user_state` counts the lifecycle scenarios read.
 */
import { createHash, randomBytes } from "node:crypto";
import { createTestDatabase } from "../tests/support/db.ts";
import { type Sql, sqlClient } from "../tests/support/context.ts";
import { providePostgres } from "../tests/support/postgres.ts";
import { hashPassword } from "../src/chat/passwords.ts";

export type { Sql };

export interface BenchPostgres {
  adminUrl: string;
  /** Where the server came from: "BENCH_DATABASE_URL", "DATABASE_URL", "testcontainers", "local". */
  provider: string;
  version: string;
  /** `show fsync` and `show synchronous_commit`: both "on" unless the run asked for --fast-db. */
  fsync: string;
  synchronousCommit: string;
  stop(): Promise<void>;
}

/**
 * Durable unless `fast` (`--fast-db`): a cluster started here runs with fsync, synchronous_commit
 * and full_page_writes on, as production does, since figures from a database that does not persist
 * are not figures of a server that promises "committed before sent". A server from the environment
 * is taken as it is; `fsync` and `synchronousCommit` say what it was. BENCH_PG_STATEMENTS=1 loads
 * pg_stat_statements in a cluster started here, to see what each statement costs.
 */
export async function provideBenchPostgres(
  log: (line: string) => void,
  options: { fast?: boolean } = {},
): Promise<BenchPostgres> {
  const source = Deno.env.get("BENCH_DATABASE_URL")
    ? "BENCH_DATABASE_URL"
    : Deno.env.get("DATABASE_URL")
    ? "DATABASE_URL"
    : undefined;
  const provided = source
    ? { url: Deno.env.get(source)!, provider: source, stop: () => Promise.resolve() }
    : await providePostgres(log, {
      durable: !options.fast,
      settings: Deno.env.get("BENCH_PG_STATEMENTS") === "1"
        ? { shared_preload_libraries: "pg_stat_statements", "pg_stat_statements.track": "all" }
        : {},
    });
  try {
    const sql = sqlClient(provided.url);
    try {
      const [row] = await sql<{ version: string; fsync: string; sync: string }[]>`
        select current_setting('server_version') as version,
               current_setting('fsync') as fsync,
               current_setting('synchronous_commit') as sync`;
      return {
        adminUrl: provided.url,
        provider: provided.provider,
        version: row.version,
        fsync: row.fsync,
        synchronousCommit: row.sync,
        stop: provided.stop,
      };
    } finally {
      await sql.end({ timeout: 5 });
    }
  } catch (error) {
    await provided.stop();
    throw error;
  }
}

export interface ScenarioDatabase {
  url: string;
  /** A small client for seeding and for reading `user_state`. */
  sql: Sql;
  drop(): Promise<void>;
}

/** A fresh database on the bench's server, as the tests make them, so no run sees another's rows. */
export async function freshDatabase(pg: BenchPostgres, label: string): Promise<ScenarioDatabase> {
  // createTestDatabase reads its admin URL from the environment at each call.
  Deno.env.set("PARLEY_TEST_ADMIN_URL", pg.adminUrl);
  const db = await createTestDatabase(`bench_${label}`);
  const sql = sqlClient(db.url);
  return {
    url: db.url,
    sql,
    drop: async () => {
      await sql.end({ timeout: 5 });
      await db.drop();
    },
  };
}

export interface SeededUser {
  id: number;
  name: string;
  password: string;
  token: string;
}

/** The one password every seeded user has; its hash is computed once per run. */
export const PASSWORD = "bench-password";
let hashed: Promise<string> | undefined;

/**
 * Inserts `count` users named `<prefix><n>` in one statement, each with a login token.
 *
 * A shortcut, on purpose: registering through the protocol costs one scrypt hash per user (30 to 50
 * ms each), which would make a 10,000-socket scenario spend minutes before it measures anything.
 * So every user gets the same password hash, computed once with the server's own `hashPassword`
 * (a password login still runs a full scrypt verification per user), and a token of its own stored
 * as the server stores tokens: only its SHA-256 digest, in `auth_tokens` (src/chat/accounts.ts).
 * The schema must exist: start a node on the database first, which migrates it.
 */
export async function seedUsers(sql: Sql, prefix: string, count: number): Promise<SeededUser[]> {
  if (count === 0) return [];
  const hash = await (hashed ??= hashPassword(PASSWORD));
  const names = Array.from({ length: count }, (_, i) => `${prefix}${i + 1}`);
  const rows = await sql<{ id: number; name: string }[]>`
    insert into users (name, password_hash)
    select n, ${hash} from unnest(${names}::text[]) with ordinality as t(n, i) order by i
    returning id, name`;
  const ids = new Map(rows.map((r) => [r.name, r.id]));
  const users = names.map((name) => ({
    id: ids.get(name)!,
    name,
    password: PASSWORD,
    token: randomBytes(32).toString("base64url"),
  }));
  const digests = users.map((u) => createHash("sha256").update(u.token).digest("hex"));
  await sql`
    insert into auth_tokens (token_hash, user_id, expires_at)
    select decode(h, 'hex'), u, now() + interval '1 day'
      from unnest(${digests}::text[], ${users.map((u) => u.id)}::bigint[]) as t(h, u)`;
  return users;
}

/**
 * A group whose members are `members`, the first its creator. Inserted directly for the same
 * reason as the users: 200 `group.join` requests would measure joins, not fan-out.
 */
export async function seedGroup(sql: Sql, name: string, members: number[]): Promise<number> {
  const [group] = await sql<{ id: number }[]>`
    insert into groups (name, created_by) values (${name}, ${members[0]}) returning id`;
  await sql`
    insert into group_members (group_id, user_id, role)
    select ${group.id}, u, case when i = 1 then 'creator' else 'member' end
      from unnest(${members}::bigint[]) with ordinality as t(u, i)`;
  return group.id;
}

/** How many of `ids` (all users when omitted) `user_state` shows online. */
export async function onlineCount(sql: Sql, ids?: number[]): Promise<number> {
  const [row] = ids
    ? await sql<{ n: number }[]>`
        select count(*)::int as n from user_state
         where state = 'online' and id = any(${ids}::bigint[])`
    : await sql<{ n: number }[]>`select count(*)::int as n from user_state where state = 'online'`;
  return row.n;
}

/**
 * Polls `onlineCount` every `everyMs` until it equals `target` or `timeoutMs` pass; returns the
 * milliseconds it took, or null on timeout.
 */
export async function waitForOnline(
  sql: Sql,
  ids: number[] | undefined,
  target: number,
  timeoutMs: number,
  everyMs = 20,
  since = performance.now(),
): Promise<number | null> {
  const deadline = since + timeoutMs;
  while (performance.now() < deadline) {
    if (await onlineCount(sql, ids) === target) return performance.now() - since;
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
  return null;
}
