/**
 * @module A short chaos run (bench/chaos.ts) as one test: three nodes, faults drawn from a fixed
 * seed, and its checker's verdict. Longer runs are `deno task chaos --seconds N`.
 */
import { assert, assertEquals } from "./support/assert.ts";

const CHAOS = new URL("../bench/chaos.ts", import.meta.url).pathname;

Deno.test("chaos: a minute of kills, freezes, drains, cut connections and a database restart loses no message", async () => {
  const dir = await Deno.makeTempDir({ prefix: "parley-chaos-" });
  try {
    const out = `${dir}/report.json`;
    const run = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", CHAOS, "--seconds", "60", "--seed", "20261204", "--out", out],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(run.stderr);
    const report = JSON.parse(await Deno.readTextFile(out));
    // The seq breaches themselves (which pair, which socket) are in the report, not on stderr.
    assertEquals(report.breaches, [], `${stderr}\n${JSON.stringify(report.seqBreaches ?? [])}`);
    assertEquals(run.code, 0, stderr);
    assert(report.faults.length >= 5, `only ${report.faults.length} faults`);
    assert(report.sent > 0 && report.delivered === report.sent, stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
