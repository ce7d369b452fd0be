/** @module Checks that the test support hands each caller an isolated database and cleans it up. */

// node:assert because the frozen import map has no @std/assert; it needs no download.
import { deepStrictEqual, notStrictEqual, strictEqual } from "node:assert/strict";
import postgres from "postgres";
import { createTestDatabase } from "./db.ts";

Deno.test("createTestDatabase gives each caller its own empty database", async () => {
  const first = await createTestDatabase("support isolation");
  const second = await createTestDatabase("support isolation");
  try {
    notStrictEqual(first.name, second.name);
    await withClient(first.url, async (sql) => {
      await sql`create table note (body text not null)`;
      await sql`insert into note (body) values ('only in the first')`;
      const rows = await sql`select body from note`;
      deepStrictEqual(rows.map((r) => r.body), ["only in the first"]);
    });
    await withClient(second.url, async (sql) => {
      const [{ table }] = await sql`select to_regclass('public.note')::text as table`;
      strictEqual(table, null, `the second database "${second.name}" sees the first's table`);
    });
  } finally {
    await first.drop();
    await second.drop();
  }
  const adminUrl = Deno.env.get("PARLEY_TEST_ADMIN_URL") || Deno.env.get("DATABASE_URL")!;
  await withClient(adminUrl, async (sql) => {
    const left = await sql`
      select datname from pg_database where datname in (${first.name}, ${second.name})
    `;
    deepStrictEqual(left.map((r) => r.datname), [], "dropped databases are still listed");
  });
});

async function withClient(url: string, fn: (sql: postgres.Sql) => Promise<void>): Promise<void> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    await fn(sql);
  } finally {
    await sql.end();
  }
}
