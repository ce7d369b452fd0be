/**
 * @module Rolling restarts: a node drains while every one of its sockets reconnects at once to
 * another node, as a container platform moves them, and resuming devices whose old session lingers.
 */
import { createHash, randomBytes } from "node:crypto";
import { assert, assertEquals } from "./support/assert.ts";
import { Client, eventually, type Frame, loggedIn } from "./support/client.ts";
import { stateOf, withWorld } from "./support/fixture.ts";
import type { Sql } from "./support/context.ts";
import { hashPassword } from "../src/chat/passwords.ts";
import { metric } from "./support/metrics.ts";

const PASSWORD = "rolling-password";

interface Seeded {
  id: number;
  name: string;
  token: string;
}

/** `count` users with tokens, inserted directly: a thousand registrations would test scrypt. */
async function seedUsers(sql: Sql, count: number): Promise<Seeded[]> {
  const hash = await hashPassword(PASSWORD);
  const prefix = `r${randomBytes(4).toString("hex")}_`;
  const names = Array.from({ length: count }, (_, i) => `${prefix}${i}`);
  const rows = await sql<{ id: number; name: string }[]>`
    insert into users (name, password_hash)
    select n, ${hash} from unnest(${names}::text[]) with ordinality as t(n, i) order by i
    returning id, name`;
  const users = rows.map((r) => ({ ...r, token: randomBytes(32).toString("base64url") }));
  await sql`
    insert into auth_tokens (token_hash, user_id, expires_at)
    select decode(h, 'hex'), u, now() + interval '1 day'
      from unnest(
        ${users.map((u) => createHash("sha256").update(u.token).digest("hex"))}::text[],
        ${users.map((u) => u.id)}::bigint[]) as t(h, u)`;
  return users;
}

/** Makes `user` a friend of each of `others`, both ways, as friend.add does. */
async function befriend(sql: Sql, user: number, others: number[]): Promise<void> {
  const users = others.map(() => user);
  await sql`
    insert into friends (user_id, friend_id)
    select x, y from unnest(${[...users, ...others]}::bigint[], ${[...others, ...users]}::bigint[])
      as t(x, y)`;
}

/** Runs `fn` over `items`, at most `width` at a time. */
async function inBatches<T, R>(items: T[], width: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += width) {
    out.push(...await Promise.all(items.slice(i, i + width).map(fn)));
  }
  return out;
}

Deno.test("rolling restart: 1,000 sockets leave a draining node and log in at once on another, none refused, no presence flap", async () => {
  await withWorld("rolling_thousand", async ({ start, sql }) => {
    // The grace covers the move; whether contacts ever hear it is what the order decides.
    const env = { PRESENCE_GRACE_MS: "60000", SHUTDOWN_TIMEOUT_MS: "30000" };
    const a = await start({ nodeId: "roll-a", env });
    const b = await start({ nodeId: "roll-b", env });
    const movers = await seedUsers(sql, 1000);
    // Watchers stay on B throughout, each a friend of 50 movers.
    const watchers = await Promise.all(Array.from({ length: 20 }, () => loggedIn(b.wsUrl, "w")));
    for (const [i, w] of watchers.entries()) {
      await befriend(sql, w.user.id, movers.slice(i * 50, i * 50 + 50).map((m) => m.id));
    }
    const sockets = await inBatches(movers, 100, async (m) => {
      const client = await Client.connect(a.wsUrl);
      const welcome = await client.request({ type: "login", token: m.token }, 60_000);
      assertEquals(welcome.type, "welcome", JSON.stringify(welcome));
      return client;
    });
    // The movers' first logins reach B as presence events too; wait until B has pushed them all.
    await eventually(
      async () =>
        await metric(b.url, "parley_bus_events_total", 'type="presence"') >= 1020 &&
        watchers.every((w) => w.client.frames.filter((f) => f.type === "presence").length === 50),
      60_000,
      "the watchers to see their friends come online",
    );
    const heardBefore = await metric(b.url, "parley_bus_events_total", 'type="presence"');
    const pushedBefore = await metric(b.url, "parley_presence_pushed_total");
    const seen = watchers.map((w) => w.client.frames.length);

    // Each socket reconnects to B the moment it is closed: 975 by token, 25 by password (25 scrypt
    // checks at once is what a busy core gets through within the request deadline).
    const replies: Promise<{ code: number; reply: Frame; client: Client }>[] = sockets.map(
      (socket, i) =>
        socket.closed.then(async (event) => {
          const client = await Client.connect(b.wsUrl);
          const login = i % 40 === 0
            ? { type: "login", name: movers[i].name, password: PASSWORD }
            : { type: "login", token: movers[i].token };
          return { code: event.code, reply: await client.request(login, 60_000), client };
        }),
    );
    a.kill("SIGTERM");
    const moved = await Promise.all(replies);
    assertEquals((await a.exited()).code, 0);
    const codes = new Set(moved.map((m) => m.code));
    assertEquals([...codes], [1001]);
    const refused = moved.filter((m) => m.reply.type !== "welcome").map((m) => m.reply);
    assertEquals(refused, [], `${refused.length} logins refused`);
    assertEquals(
      (await sql`select count(*)::int as n from user_state where state = 'online' and id = any(${
        movers.map((m) => m.id)
      }::bigint[])`)[0].n,
      1000,
    );

    // B has heard every mover go offline (from A's drain) and come back (its own logins): 2,000
    // presence events. An offline heard before its online is held for the grace and cancelled by
    // the online; one heard after would stay held. So nothing held means no contact is ever told.
    await eventually(
      async () =>
        await metric(b.url, "parley_bus_events_total", 'type="presence"') - heardBefore >= 2000,
      60_000,
      "B to hear 2,000 presence events",
    );
    assertEquals(await metric(b.url, "parley_presence_offline_held"), 0);
    assertEquals(await metric(b.url, "parley_presence_pushed_total") - pushedBefore, 0);
    for (const w of watchers) assertEquals((await w.client.request({ type: "ping" })).type, "pong");
    const flaps = watchers.flatMap((w, i) =>
      w.client.frames.slice(seen[i]).filter((f) => f.type === "presence")
    );
    assertEquals(flaps, []);
    await inBatches(moved, 200, (m) => m.client.close());
    await Promise.all(watchers.map((w) => w.client.close()));
  });
});

Deno.test("rolling restart: a device resumes by token on another node while its old session lingers on a frozen one", async () => {
  await withWorld("rolling_linger", async ({ start, sql }) => {
    const env = { NODE_TTL_MS: "60000", HEARTBEAT_MS: "200" };
    const a = await start({ nodeId: "linger-a", env });
    const b = await start({ nodeId: "linger-b", env });
    const first = await loggedIn(a.wsUrl);
    const friend = await loggedIn(b.wsUrl);
    await friend.client.request({ type: "friend.add", user: first.user.id });
    const seen = friend.client.frames.length;
    // Frozen, A keeps its lock connection and lease: its session of the user still counts.
    a.kill("SIGSTOP");
    try {
      assertEquals(await stateOf(sql, first.user.id), "online");
      // Another device (a password login) is refused while the user is online...
      const other = await Client.connect(b.wsUrl);
      const refused = await other.request({
        type: "login",
        name: first.user.name,
        password: first.user.password,
      });
      assertEquals(refused.code, "already_online");
      await other.close();
      // ...but the very device, resuming by token, replaces its old session.
      const resumed = await Client.connect(b.wsUrl);
      assertEquals((await resumed.request({ type: "login", token: first.token })).type, "welcome");
      const sessions = await sql<{ node_id: string }[]>`
        select node_id from sessions where user_id = ${first.user.id}`;
      assertEquals(sessions.map((s) => s.node_id), ["linger-b"]);
      assertEquals(await stateOf(sql, first.user.id), "online");
      a.kill("SIGCONT");
      // Thawed, A closes the replaced socket as PROTOCOL.md says for a replaced session.
      assertEquals((await first.client.closedWithin(15_000)).code, 4001);
      assertEquals(await stateOf(sql, first.user.id), "online");
      // The user never went offline: its friend heard nothing.
      assertEquals((await friend.client.request({ type: "ping" })).type, "pong");
      assert(
        !friend.client.frames.slice(seen).some((f) =>
          f.type === "presence" && f.user === first.user.id
        ),
        "the friend saw a presence change",
      );
      await Promise.all([resumed.close(), friend.client.close()]);
    } finally {
      a.kill("SIGCONT");
    }
  });
});
