/**
 * @module Rows written per message: the bench database's `pg_stat_user_tables` counters (rows
 * inserted, updated and deleted) before and after a run, by table. The tables of presence and
 * login (nodes, sessions, auth_tokens) are left out: a node's heartbeat writes its row every
 * second whatever the traffic.
 */
import type { Sql } from "./database.ts";

const NOT_TRAFFIC = new Set(["nodes", "sessions", "auth_tokens", "schema_migrations"]);
/** The counters count as settled once unchanged this long. */
const SETTLED_MS = 1500;
/** Backends report their counts within about a second of going idle; never wait longer. */
const SETTLE_DEADLINE_MS = 15_000;

export interface RowsWritten {
  /** Rows inserted, updated or deleted during the run, by table. */
  byTable: Record<string, number>;
  total: number;
  /** `total` per message stored in the run. */
  perMessage: number | null;
}

async function counters(sql: Sql): Promise<Map<string, number>> {
  const rows = await sql<{ name: string; n: number }[]>`
    select relname as name, (n_tup_ins + n_tup_upd + n_tup_del)::int8 as n
      from pg_stat_user_tables`;
  return new Map(rows.filter((r) => !NOT_TRAFFIC.has(r.name)).map((r) => [r.name, Number(r.n)]));
}

const totalOf = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);

/** The counters once every backend has reported what it wrote. */
async function settled(sql: Sql): Promise<Map<string, number>> {
  const deadline = Date.now() + SETTLE_DEADLINE_MS;
  let last = await counters(sql);
  let since = Date.now();
  while (Date.now() < deadline && Date.now() - since < SETTLED_MS) {
    await new Promise((r) => setTimeout(r, 250));
    const now = await counters(sql);
    if (totalOf(now) !== totalOf(last)) {
      last = now;
      since = Date.now();
    }
  }
  return last;
}

/** Runs `run` and counts the rows written meanwhile; `messages` says how many it stored. */
export async function countingRows<T>(
  sql: Sql,
  run: () => Promise<T>,
  messages: (result: T) => number,
): Promise<{ result: T; rows: RowsWritten }> {
  const before = await settled(sql);
  const result = await run();
  const after = await settled(sql);
  const byTable: Record<string, number> = {};
  for (const [name, n] of after) {
    const d = n - (before.get(name) ?? 0);
    if (d > 0) byTable[name] = d;
  }
  const total = Object.values(byTable).reduce((a, b) => a + b, 0);
  const stored = messages(result);
  return {
    result,
    rows: {
      byTable,
      total,
      perMessage: stored > 0 ? Math.round((total / stored) * 100) / 100 : null,
    },
  };
}
