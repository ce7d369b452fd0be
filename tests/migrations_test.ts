/**
 * @module Migrations: applied on an empty database, a no-op when re-run, applied once when two
 * processes start together.
 */
import { assertEquals } from "./support/assert.ts";
import { createTestDatabase, withSql } from "./support/context.ts";
import { runMain } from "./support/server.ts";
import { loadMigrations, migrate } from "../src/db/migrate.ts";

Deno.test("migrate creates the whole schema on an empty database and is a no-op when re-run", async () => {
  const db = await createTestDatabase("migrate");
  try {
    await withSql(db.url, async (sql) => {
      const all = await loadMigrations();
      assertEquals(await migrate(sql), all.map((m) => m.version));
      assertEquals(await migrate(sql), []);
      const tables = await sql<{ name: string }[]>`
        select table_name as name from information_schema.tables
         where table_schema = 'public' order by table_name`;
      assertEquals(tables.map((t) => t.name), [
        "auth_tokens",
        "blocks",
        "conversations",
        "device_cursors",
        "friends",
        "group_members",
        "groups",
        "message_events",
        "messages",
        "nodes",
        "schema_migrations",
        "sessions",
        "user_cursors",
        "user_state",
        "users",
      ]);
    });
  } finally {
    await db.drop();
  }
});

Deno.test("migrate run by two processes at once applies each migration once", async () => {
  const db = await createTestDatabase("migrate_race");
  try {
    const env = { DATABASE_URL: db.url, LOG_LEVEL: "info" };
    const [a, b] = await Promise.all([runMain(["migrate"], env), runMain(["migrate"], env)]);
    assertEquals([a.code, b.code], [0, 0], a.stderr + b.stderr);
    await withSql(db.url, async (sql) => {
      const rows = await sql<
        { version: number }[]
      >`select version from schema_migrations order by version`;
      assertEquals(rows.map((r) => r.version), (await loadMigrations()).map((m) => m.version));
    });
    // Exactly one of the two logged the versions it applied; the other found nothing to do.
    const applied = [a, b].map((r) =>
      JSON.parse(r.stderr.trim().split("\n").at(-1)!).versions.length
    );
    assertEquals(applied.sort(), [0, (await loadMigrations()).length]);
  } finally {
    await db.drop();
  }
});
