/**
 * @module Property-based fuzzing of the WebSocket protocol against a live server: 10,000 hostile
 * frames, before and after login, while two other users keep chatting.
 */
import { assert, assertEquals } from "./support/assert.ts";
import { loggedIn } from "./support/client.ts";
import { withWorld } from "./support/fixture.ts";
import { fuzz, hostileFrames } from "./support/fuzz.ts";

// `deno task fuzz` raises the default; FUZZ_FRAMES overrides either.
const FRAMES = Number(Deno.env.get("FUZZ_FRAMES") ?? Deno.env.get("FUZZ_DEFAULT_FRAMES") ?? 10_000);
const SEED = Number(Deno.env.get("FUZZ_SEED") ?? Date.now() % 1_000_000);

Deno.test(`fuzz: ${FRAMES} hostile frames get documented answers and change nothing`, async () => {
  await withWorld("fuzz", async ({ start, sql }) => {
    // `multi`: each fuzzing socket logs in while the previous one may still be closing.
    const server = await start({
      env: { RATE_LIMIT_PER_SEC: "1000000", RATE_LIMIT_BURST: "1000000", LOGIN_POLICY: "multi" },
    });
    const fuzzer = await loggedIn(server.wsUrl, "fz");
    await fuzzer.client.close();
    const a = await loggedIn(server.wsUrl, "chat_a");
    const b = await loggedIn(server.wsUrl, "chat_b");

    // Two users chat all along; each round trip is timed.
    const roundTrip = async (n: number) => {
      const started = performance.now();
      await a.client.request({ type: "send", to: { user: b.user.id }, text: `rt ${n}` });
      await b.client.next((f) =>
        f.type === "message" && (f.message as { text: string }).text === `rt ${n}`
      );
      return performance.now() - started;
    };
    const baseline: number[] = [];
    for (let i = 0; i < 20; i++) baseline.push(await roundTrip(i));
    const before = await counts(sql);

    let chatting = true;
    const during: number[] = [];
    const chat = (async () => {
      for (let n = 100; chatting; n++) during.push(await roundTrip(n));
    })();
    const frames = hostileFrames(FRAMES, SEED);
    const half = Math.floor(frames.length / 2);
    const anonymous = await fuzz(server.wsUrl, frames.slice(0, half));
    const authenticated = await fuzz(
      server.wsUrl,
      frames.slice(half),
      () => ({ type: "login", token: fuzzer.token }),
    );
    chatting = false;
    await chat;

    const failures = [...anonymous.failures, ...authenticated.failures];
    assertEquals(failures.slice(0, 10), [], `seed ${SEED}: ${failures.length} failures`);
    assertEquals(anonymous.frames + authenticated.frames, FRAMES);
    // The server is alive and nothing was written by a rejected frame.
    assertEquals(server.logs.some((l) => l.event === "ws.internal"), false);
    assertEquals(await counts(sql), { ...before, messages: before.messages + during.length });
    const median = (xs: number[]) => xs.sort((x, y) => x - y)[Math.floor(xs.length / 2)];
    assert(during.length > 0, "the chatting pair made no progress during the fuzz run");
    // Same order of magnitude, with room for a 2-core machine doing the fuzzing as well.
    assert(
      median(during) < 10 * median(baseline) + 50,
      `chat latency went from ${median(baseline).toFixed(1)} ms to ${median(during).toFixed(1)} ms`,
    );
    console.log(JSON.stringify({
      fuzz: { frames: FRAMES, seed: SEED, sockets: anonymous.sockets + authenticated.sockets },
      chatMedianMs: { before: median(baseline), during: median(during), roundTrips: during.length },
    }));
    await Promise.all([a.client.close(), b.client.close()]);
    assertEquals(
      await Promise.race([server.status.then(() => "exited"), Promise.resolve("running")]),
      "running",
    );
  });
});

async function counts(sql: import("./support/context.ts").Sql) {
  const [row] = await sql<Record<string, number>[]>`
    select (select count(*) from users) as users,
           (select count(*) from messages) as messages,
           (select count(*) from groups) as groups,
           (select count(*) from group_members) as members,
           (select count(*) from friends) as friends,
           (select count(*) from auth_tokens) as tokens`;
  return row;
}
