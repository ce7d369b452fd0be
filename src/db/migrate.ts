/**
 * @module Versioned schema migrations: `migrations/NNNN_name.sql`, applied in order, each once,
 * in one transaction under an advisory lock so that nodes starting together never race.
 */
import type { Sql } from "./connect.ts";
import { LOCK_NAMESPACE } from "./locks.ts";

const MIGRATIONS_DIR = new URL("./migrations/", import.meta.url);

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export async function loadMigrations(dir: URL = MIGRATIONS_DIR): Promise<Migration[]> {
  const found: Migration[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const match = /^(\d{4})_([a-z0-9_]+)\.sql$/.exec(entry.name);
    if (!entry.isFile || !match) continue;
    found.push({
      version: Number(match[1]),
      name: match[2],
      sql: await Deno.readTextFile(new URL(entry.name, dir)),
    });
  }
  found.sort((a, b) => a.version - b.version);
  found.forEach((m, i) => {
    if (m.version !== i + 1) {
      throw new Error(`Migration "${m.version}_${m.name}" is out of sequence: expected ${i + 1}`);
    }
  });
  return found;
}

/**
 * Applies what is missing and returns the versions applied now. The transaction-level lock makes a
 * second process wait for the first and then find nothing left to do.
 */
export async function migrate(sql: Sql, migrations?: Migration[]): Promise<number[]> {
  const all = migrations ?? await loadMigrations();
  return await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(${LOCK_NAMESPACE}, 0)`;
    await tx`
      create table if not exists schema_migrations (
        version    integer primary key,
        name       text not null,
        applied_at timestamptz not null default now()
      )`;
    const done = new Set(
      (await tx<{ version: number }[]>`select version from schema_migrations`).map((r) =>
        r.version
      ),
    );
    const applied: number[] = [];
    for (const m of all) {
      if (done.has(m.version)) continue;
      // Migration files are trusted source, several statements each: the simple protocol runs them.
      await tx.unsafe(m.sql).simple();
      await tx`insert into schema_migrations (version, name) values (${m.version}, ${m.name})`;
      applied.push(m.version);
    }
    return applied;
  });
}
