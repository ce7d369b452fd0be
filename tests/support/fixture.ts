/**
 * @module The usual shape of a server test: a fresh database, server processes on it, a SQL client
 * for assertions, and everything ended afterwards whatever the test did.
 */
import { createTestDatabase, type Sql, sqlClient } from "./context.ts";
import { type ServerOptions, type ServerProcess, startServer } from "./server.ts";

export interface World {
  databaseUrl: string;
  sql: Sql;
  /** Starts a server on this world's database; stopped at the end if still running. */
  start(options?: Omit<ServerOptions, "databaseUrl">): Promise<ServerProcess>;
}

export async function withWorld(label: string, fn: (world: World) => Promise<void>): Promise<void> {
  const db = await createTestDatabase(label);
  const sql = sqlClient(db.url);
  const servers: ServerProcess[] = [];
  try {
    await fn({
      databaseUrl: db.url,
      sql,
      start: async (options = {}) => {
        const server = await startServer({ ...options, databaseUrl: db.url });
        servers.push(server);
        return server;
      },
    });
  } finally {
    await Promise.all(servers.map((s) => s.stop(3000)));
    await sql.end({ timeout: 5 });
    await db.drop();
  }
}

/** The `user_state` view's state for `userId`. */
export async function stateOf(sql: Sql, userId: number): Promise<string> {
  const [row] = await sql<{ state: string }[]>`select state from user_state where id = ${userId}`;
  return row.state;
}

/**
 * Events of `userId`'s conversations that no device of the user acknowledged: the course's
 * "offline messages", from the cursors.
 */
export async function undelivered(sql: Sql, userId: number): Promise<number> {
  const [row] = await sql<{ n: number }[]>`
    select coalesce(sum(c.last_seq - coalesce(uc.delivered_seq, 0)), 0)::int as n
      from conversations c
      left join user_cursors uc on uc.conversation_id = c.id and uc.user_id = ${userId}
     where c.user_a = ${userId} or c.user_b = ${userId}
        or c.group_id in (select group_id from group_members where user_id = ${userId})`;
  return row.n;
}
