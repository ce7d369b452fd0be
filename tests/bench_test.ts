/**
 * @module The bench harness end to end: `bench/main.ts --tiny` as a real process on the test run's
 * PostgreSQL, checked for a complete, well-formed result. Timings are reported, never asserted.
 */
import { assert, assertEquals } from "./support/assert.ts";

const MAIN = new URL("../bench/main.ts", import.meta.url).pathname;
const ROOT = new URL("../", import.meta.url).pathname;

type Entry = Record<string, unknown> & { name: string };

const isNumber = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);

function entries(scenarios: Entry[], name: string): Entry[] {
  const found = scenarios.filter((s) => s.name === name);
  assert(found.length > 0, `scenario "${name}" is missing from the results`);
  for (const e of found) assertEquals(e.error, undefined, `scenario "${name}" failed`);
  return found;
}

function assertNumbers(e: Entry, keys: string[]) {
  for (const key of keys) {
    assert(isNumber(e[key]), `${e.name}.${key} is ${JSON.stringify(e[key])}, not a number`);
  }
}

/** Every message sent was confirmed and delivered exactly as often as expected. */
function assertDelivered(label: string, t: Entry) {
  assertEquals(t.errors, {}, `${label} had errors`);
  assertEquals(t.timedOut, false, `${label} timed out`);
  assertEquals(t.stalled, false, `${label} stalled with receipts missing`);
  assertEquals(t.confirmed, t.sent, `${label}: not every send was confirmed`);
  assertEquals(t.delivered, t.expected, `${label}: not every message was delivered`);
  assertEquals(t.duplicates, 0, `${label} delivered duplicates`);
}

Deno.test("bench --tiny runs every scenario end to end and writes complete JSON", async () => {
  const adminUrl = Deno.env.get("PARLEY_TEST_ADMIN_URL") || Deno.env.get("DATABASE_URL");
  if (!adminUrl) {
    throw new Error("No PostgreSQL for the bench test: run it with `deno task test`");
  }
  const dir = await Deno.makeTempDir({ prefix: "parley-bench-" });
  try {
    const out = `${dir}/results.json`;
    const run = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", MAIN, "--tiny", "--out", out],
      env: { BENCH_DATABASE_URL: adminUrl },
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = (b: Uint8Array) => new TextDecoder().decode(b);
    assertEquals(
      run.code,
      0,
      `bench exited ${run.code}:\n${text(run.stdout)}\n${text(run.stderr)}`,
    );
    assert(text(run.stdout).includes("direct w8"), "the table on stdout lacks the direct rows");

    const results = JSON.parse(await Deno.readTextFile(out));
    assertEquals(results.profile, "tiny");
    assert(!Number.isNaN(Date.parse(results.runAt)), "runAt is not a date");
    assertNumbers(results.machine, ["cpus", "memory"]);
    assertEquals(typeof results.machine.deno, "string");
    assertEquals(typeof results.machine.postgres, "string");
    assertEquals(typeof results.database.provider, "string");
    assert(["on", "off"].includes(results.database.fsync), "database.fsync is not on or off");
    const scenarios = results.scenarios as Entry[];

    const direct = entries(scenarios, "direct");
    assertEquals(direct.map((e) => e.window).sort(), [1, 8]);
    for (const e of direct) {
      assertNumbers(e, ["persistedMsgsPerSec", "rawRelayMsgsPerSec", "ratio", "p50Ms", "p99Ms"]);
      assertDelivered(`direct w${e.window}`, e.persisted as Entry);
      assertDelivered(`direct w${e.window} raw`, e.raw as Entry);
    }
    const [latency] = entries(scenarios, "latency");
    assertNumbers(latency, ["offeredMsgsPerSec", "durationMs", "p50Ms", "p99Ms", "maxMs"]);
    assertNumbers({ ...(latency.warmup as Record<string, unknown>), name: "latency.warmup" }, [
      "durationMs",
      "p50Ms",
      "p99Ms",
      "maxMs",
    ]);
    assertDelivered("latency", latency);
    const [cross] = entries(scenarios, "cross");
    assertNumbers(cross, ["msgsPerSec", "p50Ms", "p99Ms"]);
    assertDelivered("cross", cross);
    const cluster = entries(scenarios, "cluster");
    assertEquals(cluster.map((e) => e.bus), ["postgres", "nats"]);
    for (const e of cluster) {
      assertNumbers(e, ["msgsPerSec", "p50Ms", "p99Ms"]);
      assertDelivered(`cluster ${e.bus}`, e);
      const received = e.busMessagesReceived as Record<string, number>;
      assert(received.b > 0, `cluster ${e.bus}: node B received nothing from the bus`);
    }
    // On NATS, node C holds no recipient and so takes in next to nothing; LISTEN/NOTIFY gives it
    // every notification.
    const [pgRun, natsRun] = cluster.map((e) => e.busMessagesReceived as Record<string, number>);
    assert(natsRun.c <= 2, `cluster nats: node C received ${natsRun.c} bus messages`);
    assert(pgRun.c > 0, "cluster postgres: node C received no notification");
    const [group] = entries(scenarios, "group");
    assertNumbers(group, ["members", "deliveriesPerSec", "p99Ms"]);
    assertDelivered("group", group);
    assertEquals(group.expected, (group.members as number - 1) * (group.messages as number));

    const logins = entries(scenarios, "logins");
    assertEquals(logins.map((e) => e.method), ["password", "token"]);
    for (const e of logins) {
      assertNumbers(e, ["count", "totalMs", "p99Ms"]);
      assertEquals(e.ok, e.count, `logins by ${e.method}: not every login succeeded`);
    }
    const [idle] = entries(scenarios, "idle");
    assertNumbers(idle, ["connections", "rssBytesPerConn"]);
    assertEquals(idle.onlineInUserState, idle.connections);
    const [sigterm] = entries(scenarios, "sigterm");
    assertNumbers(sigterm, ["connections", "drainMs"]);
    assertEquals(sigterm.exitCode, 0);
    assertEquals(sigterm.onlineBefore, sigterm.connections);
    assertEquals(sigterm.onlineAfter, 0);
    const [sigkill] = entries(scenarios, "sigkill");
    assertNumbers(sigkill, ["users", "offlineAfterMs"]);
    assertEquals(sigkill.onlineBefore, sigkill.users);
    assertEquals(sigkill.survivorsOnlineAfter, sigkill.survivors);
    const course = entries(scenarios, "course");
    assertEquals(course.map((e) => e.window).sort(), [1, 8]);
    for (const e of course) {
      assertNumbers(e, ["parleyMsgsPerSec"]);
      const p = e.parley as Entry;
      assertEquals(p.lost, 0, `course w${e.window} lost messages`);
      assertEquals(p.received, p.expected, `course w${e.window}: not every message arrived`);
      assertEquals(p.duplicates, 0, `course w${e.window} delivered duplicates`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
