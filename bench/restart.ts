/**
 * @module Time from SIGKILL of a single node, through the restart of the same NODE_ID, to the first
 * login that node accepts again (issue 3's figure): `deno run -A bench/restart.ts [rounds]`.
 * Runs on DATABASE_URL, or on a throwaway cluster from the test fixture's providers.
 */
import { Client, loggedIn } from "../tests/support/client.ts";
import { createTestDatabase } from "../tests/support/db.ts";
import { providePostgres } from "../tests/support/postgres.ts";
import { startServer } from "../tests/support/server.ts";

const rounds = Number(Deno.args.find((a) => /^\d+$/.test(a)) ?? 5);
const pg = await providePostgres((line) => console.error(line));
Deno.env.set("PARLEY_TEST_ADMIN_URL", pg.url);
const db = await createTestDatabase("restart_bench");
// Production timing: the lease (15 s) has not run out when the node comes back.
const env = { NODE_TTL_MS: "15000", HEARTBEAT_MS: "1000" };
const results: number[] = [];
try {
  for (let round = 0; round < rounds; round++) {
    const before = await startServer({ databaseUrl: db.url, nodeId: "restarted", env });
    const user = await loggedIn(before.wsUrl);
    before.kill("SIGKILL");
    await before.exited();
    await user.client.closed;
    const killed = performance.now();
    const after = await startServer({ databaseUrl: db.url, nodeId: "restarted", env });
    for (let accepted = false; !accepted;) {
      const c = await Client.connect(after.wsUrl);
      accepted = (await c.request({ type: "login", token: user.token })).type === "welcome";
      await c.close();
    }
    results.push(Math.round(performance.now() - killed));
    await after.stop();
  }
} finally {
  await db.drop();
  await pg.stop();
}
const sorted = [...results].sort((a, b) => a - b);
console.log(JSON.stringify({
  scenario: "sigkill-restart-login",
  rounds,
  ms: results,
  medianMs: sorted[Math.floor(sorted.length / 2)],
  note: "includes starting a new deno process (module load, migrations check, reset)",
}));
