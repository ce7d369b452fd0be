/** @module Gives each test file a fresh database of its own on the server that the run provides. */

import postgres from "postgres";

export type TestDatabase = {
  /** Connection URL of the new database: the admin URL with its database name replaced. */
  url: string;
  name: string;
  /** Ends every connection to the database and drops it; safe to call twice. */
  drop(): Promise<void>;
};

const NO_SERVER = "No test database: run the tests with `deno task test`, which provides " +
  "PostgreSQL, or set DATABASE_URL to a server where databases may be created";

// PostgreSQL truncates identifiers to 63 bytes; a truncated name would no longer be ours to drop.
const MAX_NAME = 63;

export async function createTestDatabase(label: string): Promise<TestDatabase> {
  const adminUrl = Deno.env.get("PARLEY_TEST_ADMIN_URL") || Deno.env.get("DATABASE_URL");
  if (!adminUrl) throw new Error(NO_SERVER);
  const name = databaseName(label);
  const url = withDatabase(adminUrl, name);
  try {
    await withAdmin(adminUrl, async (sql) => {
      // sql(name) quotes an identifier into the text, so CREATE DATABASE gets no parameters.
      await sql`create database ${sql(name)}`;
    });
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    const where = `"${name}" on "${redact(adminUrl)}"`;
    throw new Error(`Could not create test database ${where}: ${reason}`, { cause: error });
  }
  let dropping: Promise<void> | undefined;
  return {
    url,
    name,
    drop: () =>
      dropping ??= withAdmin(adminUrl, async (sql) => {
        await sql`
          select pg_terminate_backend(pid) from pg_stat_activity
          where datname = ${name} and pid <> pg_backend_pid()
        `;
        const [{ version }] = await sql<{ version: number }[]>`
          select current_setting('server_version_num')::int as version
        `;
        // FORCE also ends connections that arrive between the terminate and the drop.
        if (version >= 130000) {
          await sql`drop database if exists ${sql(name)} with (force)`;
        } else {
          await sql`drop database if exists ${sql(name)}`;
        }
      }),
  };
}

function databaseName(label: string): string {
  const suffix = [...crypto.getRandomValues(new Uint8Array(6))]
    .map((b) => b.toString(16).padStart(2, "0"))
    .join("");
  const room = MAX_NAME - "parley_".length - "_".length - suffix.length;
  const clean = label.toLowerCase().replace(/[^a-z0-9]+/g, "_").replace(/^_+|_+$/g, "")
    .slice(0, room).replace(/_+$/, "");
  return `parley_${clean || "test"}_${suffix}`;
}

function withDatabase(adminUrl: string, name: string): string {
  let url: URL;
  try {
    url = new URL(adminUrl);
  } catch {
    throw new Error(`Invalid admin URL "${redact(adminUrl)}": expected postgres://host/database`);
  }
  url.pathname = `/${name}`;
  return url.toString();
}

/** Runs `fn` on a one-connection client that is always ended, so no test leaks a socket. */
async function withAdmin<T>(adminUrl: string, fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = postgres(adminUrl, { max: 1, connect_timeout: 10, onnotice: () => {} });
  try {
    return await fn(sql);
  } finally {
    await sql.end();
  }
}

function redact(url: string): string {
  return url.replace(/\/\/[^@/]*@/, "//***@");
}
