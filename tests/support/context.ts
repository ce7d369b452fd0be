/**
 * @module Per-file test context: a fresh database, and a postgres.js client on it that the test
 * ends itself.
 */
import postgres from "postgres";
import { createTestDatabase, type TestDatabase } from "./db.ts";

export type Sql = postgres.Sql;

/** A postgres.js client on `url`, of `max` connections; int8 read as number, as the server reads it. */
export function sqlClient(url: string, max = 2): Sql {
  return postgres(url, {
    max,
    onnotice: () => {},
    types: {
      int8: {
        to: 20,
        from: [20],
        serialize: (x: number) => String(x),
        parse: (x: string) => Number(x),
      },
    },
  } as postgres.Options<Record<string, postgres.PostgresType>>) as unknown as Sql;
}

/** Runs `fn` with a client on `url`, then ends the client. */
export async function withSql<T>(url: string, fn: (sql: Sql) => Promise<T>): Promise<T> {
  const sql = sqlClient(url);
  try {
    return await fn(sql);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

export type { TestDatabase };
export { createTestDatabase };
