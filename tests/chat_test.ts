/**
 * @module Chat: every request, reply, push and error of PROTOCOL.md's "After login" and "Pushes",
 * on one node and across two, with DESIGN.md's "nothing lost" guarantees.
 */
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { metric } from "./support/metrics.ts";
import { Client, eventually, type Frame, loggedIn, resume } from "./support/client.ts";
import { stateOf, undelivered, withWorld } from "./support/fixture.ts";
import { SilentPeer } from "./support/raw_ws.ts";

type Msg = {
  id: number;
  from: { id: number; name: string };
  to: unknown;
  text: string;
  at: string;
  clientId?: string;
};
const msg = (f: Frame) => f.message as Msg;
const isMessage = (text: string) => (f: Frame) => f.type === "message" && msg(f).text === text;

Deno.test("friend.add is mutual, idempotent, pushed to the other user, and checks ids", async () => {
  await withWorld("chat_friends", async ({ start }) => {
    const [a, b] = [await start({ nodeId: "fa" }), await start({ nodeId: "fb" })];
    const alice = await loggedIn(a.wsUrl, "alice");
    const bob = await loggedIn(b.wsUrl, "bob");

    const added = await alice.client.request({ type: "friend.add", user: bob.user.id });
    assertEquals(added, {
      type: "friend.added",
      ref: added.ref,
      friend: { id: bob.user.id, name: bob.user.name, online: true },
    });
    // Bob is on the other node and hears of it through the bus.
    const pushed = await bob.client.next((f) => f.type === "friend.added");
    assertEquals(pushed, {
      type: "friend.added",
      friend: { id: alice.user.id, name: alice.user.name, online: true },
    });

    const again = await alice.client.request({ type: "friend.add", user: bob.user.id });
    assertEquals(again.type, "friend.added");

    for (const user of [999999, 2 ** 40]) {
      assertEquals((await alice.client.request({ type: "friend.add", user })).code, "not_found");
    }
    for (const user of [0, -1, 1.5, "1", 2 ** 60]) {
      const r = await alice.client.request({ type: "friend.add", user });
      assertEquals(r.code, "bad_frame", `user ${user}`);
      assertMatch(r.message as string, /"user"/);
    }
    assertEquals(
      (await alice.client.request({ type: "friend.add", user: alice.user.id })).code,
      "bad_frame",
    );
    assertEquals((await alice.client.request({ type: "friend.add" })).code, "bad_frame");

    // Both see each other, with live presence, in their next welcome.
    await bob.client.close();
    const { client: bobAgain, welcome: bobWelcome } = await resume(b.wsUrl, bob.token);
    assertEquals(bobWelcome.friends, [{ id: alice.user.id, name: alice.user.name, online: true }]);
    await alice.client.request({ type: "logout" });
    const aliceAgain = await Client.connect(a.wsUrl);
    const w = await aliceAgain.request({ type: "login", token: alice.token });
    assertEquals(w.code, "bad_credentials"); // logout revoked that token
    const w2 = await aliceAgain.request({
      type: "login",
      name: alice.user.name,
      password: alice.user.password,
    });
    assertEquals(w2.friends, [{ id: bob.user.id, name: bob.user.name, online: true }]);
    await Promise.all([bobAgain.close(), aliceAgain.close()]);
  });
});

Deno.test("groups: create, join idempotently, members with roles and presence, group.member pushes", async () => {
  await withWorld("chat_groups", async ({ start }) => {
    const [a, b] = [await start({ nodeId: "ga" }), await start({ nodeId: "gb" })];
    const carol = await loggedIn(a.wsUrl, "carol");
    const dave = await loggedIn(b.wsUrl, "dave");
    const created = await carol.client.request({
      type: "group.create",
      name: "  Book club  ",
      description: "Monthly",
    });
    assertEquals(created.type, "group.created");
    const group = created.group as {
      id: number;
      name: string;
      description: string;
      members: unknown[];
    };
    assertEquals(group.name, "Book club");
    assertEquals(group.description, "Monthly");
    assertEquals(group.members, [{
      id: carol.user.id,
      name: carol.user.name,
      role: "creator",
      online: true,
    }]);

    const joined = await dave.client.request({ type: "group.join", group: group.id });
    assertEquals(joined.type, "group.joined");
    assertEquals((joined.group as { members: unknown[] }).members, [
      { id: carol.user.id, name: carol.user.name, role: "creator", online: true },
      { id: dave.user.id, name: dave.user.name, role: "member", online: true },
    ]);
    const push = await carol.client.next((f) => f.type === "group.member");
    assertEquals(push, {
      type: "group.member",
      group: group.id,
      member: { id: dave.user.id, name: dave.user.name, role: "member", online: true },
    });
    const twice = await dave.client.request({ type: "group.join", group: group.id });
    assertEquals((twice.group as { members: unknown[] }).members.length, 2);

    assertEquals(
      (await dave.client.request({ type: "group.join", group: 987654 })).code,
      "not_found",
    );
    assertEquals(
      (await dave.client.request({ type: "group.create", name: "   " })).code,
      "bad_frame",
    );
    assertEquals(
      (await dave.client.request({ type: "group.create", name: "x".repeat(65) })).code,
      "bad_frame",
    );
    const noDesc = await dave.client.request({ type: "group.create", name: "Solo" });
    assertEquals((noDesc.group as { description: string }).description, "");

    await dave.client.close();
    const { client: again, welcome } = await resume(b.wsUrl, dave.token);
    const groups = welcome.groups as { id: number; members: { id: number; role: string }[] }[];
    assertEquals(groups.map((g) => g.id), [group.id, (noDesc.group as { id: number }).id]);
    assertEquals(groups[0].members.map((m) => m.role), ["creator", "member"]);
    await Promise.all([again.close(), carol.client.close()]);
  });
});

Deno.test("send: sent and the push carry the same message; the sender gets no push; Unicode kept", async () => {
  await withWorld("chat_send", async ({ start, sql }) => {
    const server = await start();
    const a = await loggedIn(server.wsUrl);
    const b = await loggedIn(server.wsUrl);
    const text =
      `  ä½ å¥½ 🎉 "quotes" \\ back\\slash \n new line 'single' <b>html</b> ' OR 1=1; -- 💬  `;
    const sent = await a.client.request({
      type: "send",
      to: { user: b.user.id },
      text,
      clientId: "c-1",
    });
    assertEquals(sent.type, "sent");
    const m = msg(sent);
    assertEquals(m.text, text.trim());
    assertEquals(m.from, { id: a.user.id, name: a.user.name });
    assertEquals(m.to, { user: b.user.id });
    assertEquals(m.clientId, "c-1");
    assertEquals(new Date(m.at).toISOString(), m.at);
    const pushed = await b.client.next((f) => f.type === "message");
    assertEquals(pushed, { type: "message", message: m });
    const [row] = await sql<{ body: string }[]>`select body from messages where id = ${m.id}`;
    assertEquals(row.body, text.trim());

    const max = "𝄞".repeat(4000);
    assertEquals(
      (await a.client.request({ type: "send", to: { user: b.user.id }, text: max })).type,
      "sent",
    );
    for (
      const bad of ["", "   \n\t ", "x".repeat(4001), "nul \u0000 inside", "lone \ud800 surrogate"]
    ) {
      const r = await a.client.request({ type: "send", to: { user: b.user.id }, text: bad });
      assertEquals(r.code, "bad_frame");
      assertMatch(r.message as string, /"text"/);
    }
    assertEquals(
      (await a.client.request({ type: "send", to: { user: 424242 }, text: "hi" })).code,
      "not_found",
    );
    assertEquals(
      (await a.client.request({ type: "send", to: { group: 424242 }, text: "hi" })).code,
      "not_found",
    );
    assertEquals(
      (await a.client.request({ type: "send", to: { user: 1, group: 1 }, text: "hi" })).code,
      "bad_frame",
    );
    assertEquals(
      (await a.client.request({ type: "send", to: { user: b.user.id }, text: 5 })).code,
      "bad_frame",
    );

    await b.client.request({ type: "ping" });
    assertEquals(a.client.frames.filter((f) => f.type === "message").length, 0);
    await Promise.all([a.client.close(), b.client.close()]);
  });
});

Deno.test("send: a clientId retry returns the first message; a new clientId is a new message", async () => {
  await withWorld("chat_client_id", async ({ start, sql }) => {
    const server = await start();
    const a = await loggedIn(server.wsUrl);
    const b = await loggedIn(server.wsUrl);
    const first = msg(
      await a.client.request({
        type: "send",
        to: { user: b.user.id },
        text: "once",
        clientId: "k1",
      }),
    );
    // The sender's socket drops before it reads `sent`; it reconnects and retries.
    await a.client.close();
    const { client: again } = await resume(server.wsUrl, a.token);
    const retry = msg(
      await again.request({ type: "send", to: { user: b.user.id }, text: "once", clientId: "k1" }),
    );
    assertEquals(retry, first);
    const other = msg(
      await again.request({ type: "send", to: { user: b.user.id }, text: "once", clientId: "k2" }),
    );
    assert(other.id > first.id);
    const rows = await sql`select id from messages where sender_id = ${a.user.id}`;
    assertEquals(rows.length, 2);
    await b.client.next((f) => f.type === "message" && msg(f).id === other.id);
    assertEquals(b.client.frames.filter((f) => f.type === "message").length, 2);
    await Promise.all([again.close(), b.client.close()]);
  });
});

Deno.test("delivery: waiting messages follow welcome oldest first; acked ones are not sent again", async () => {
  await withWorld("chat_offline", async ({ start, sql }) => {
    const server = await start();
    const a = await loggedIn(server.wsUrl);
    const b = await loggedIn(server.wsUrl);
    await b.client.request({ type: "logout" });
    const texts = ["one", "two", "three", "four"];
    const ids: number[] = [];
    for (const text of texts) {
      ids.push(msg(await a.client.request({ type: "send", to: { user: b.user.id }, text })).id);
    }
    assertEquals(await stateOf(sql, b.user.id), "offline");

    const c = await Client.connect(server.wsUrl);
    const welcome = await c.request({
      type: "login",
      name: b.user.name,
      password: b.user.password,
    });
    assertEquals(welcome.type, "welcome");
    await c.next(isMessage("four"));
    const afterWelcome = c.frames.slice(c.frames.indexOf(welcome) + 1).filter((f) =>
      f.type === "message"
    );
    assertEquals(afterWelcome.map((f) => msg(f).text), texts);
    assert(c.frames.indexOf(welcome) < c.frames.findIndex((f) => f.type === "message"));
    // Acknowledge the first two only. ack has no reply, even with a ref.
    c.send({ type: "ack", ids: ids.slice(0, 2), ref: "ack-1" });
    assertEquals((await c.request({ type: "ping" })).type, "pong");
    assertEquals(c.frames.some((f) => f.ref === "ack-1"), false);
    await eventually(async () => await undelivered(sql, b.user.id) === 2);
    await c.request({ type: "logout" });

    const d = await Client.connect(server.wsUrl);
    await d.request({ type: "login", name: b.user.name, password: b.user.password });
    await d.next(isMessage("four"));
    assertEquals(d.frames.filter((f) => f.type === "message").map((f) => msg(f).text), [
      "three",
      "four",
    ]);
    await Promise.all([a.client.close(), d.close()]);
  });
});

Deno.test("delivery: a recipient with two sockets (multi) gets each message on both", async () => {
  await withWorld("chat_multi", async ({ start }) => {
    const env = { LOGIN_POLICY: "multi" };
    const [a, b] = [await start({ nodeId: "ma", env }), await start({ nodeId: "mb", env })];
    const sender = await loggedIn(a.wsUrl);
    const first = await loggedIn(a.wsUrl);
    const second = await Client.connect(b.wsUrl);
    assertEquals((await second.request({ type: "login", token: first.token })).type, "welcome");
    await sender.client.request({ type: "send", to: { user: first.user.id }, text: "to both" });
    await first.client.next(isMessage("to both"));
    await second.next(isMessage("to both"));
    await Promise.all([sender.client.close(), first.client.close(), second.close()]);
  });
});

Deno.test("group messages reach every member but the sender, online or not, across nodes", async () => {
  await withWorld("chat_group_send", async ({ start, sql }) => {
    const [a, b] = [await start({ nodeId: "gsa" }), await start({ nodeId: "gsb" })];
    const owner = await loggedIn(a.wsUrl);
    const near = await loggedIn(a.wsUrl);
    const far = await loggedIn(b.wsUrl);
    const away = await loggedIn(b.wsUrl);
    const outsider = await loggedIn(b.wsUrl);
    const group =
      ((await owner.client.request({ type: "group.create", name: "crew" })).group as { id: number })
        .id;
    for (const m of [near, far, away]) await m.client.request({ type: "group.join", group });
    await away.client.request({ type: "logout" });

    const sent = msg(
      await owner.client.request({ type: "send", to: { group }, text: "all hands" }),
    );
    assertEquals(sent.to, { group });
    await near.client.next(isMessage("all hands"));
    await far.client.next(isMessage("all hands"));
    const forbidden = await outsider.client.request({
      type: "send",
      to: { group },
      text: "let me in",
    });
    assertEquals(forbidden.code, "forbidden");
    assertEquals((await sql`select 1 from messages where body = 'let me in'`).length, 0);

    const back = await Client.connect(a.wsUrl);
    await back.request({ type: "login", name: away.user.name, password: away.user.password });
    assertEquals(msg(await back.next(isMessage("all hands"))).id, sent.id);
    await owner.client.request({ type: "ping" });
    assertEquals(owner.client.frames.some(isMessage("all hands")), false);
    await Promise.all(
      [owner, near, far, outsider].map((u) => u.client.close()).concat(back.close()),
    );
  });
});

Deno.test("history pages a conversation oldest first, for its members only", async () => {
  await withWorld("chat_history", async ({ start }) => {
    const server = await start({ env: { RATE_LIMIT_PER_SEC: "1000", RATE_LIMIT_BURST: "1000" } });
    const a = await loggedIn(server.wsUrl);
    const b = await loggedIn(server.wsUrl);
    const c = await loggedIn(server.wsUrl);
    for (let i = 0; i < 12; i++) {
      const [from, to] = i % 2 === 0 ? [a, b] : [b, a];
      await from.client.request({ type: "send", to: { user: to.user.id }, text: `m${i}` });
    }
    await a.client.request({ type: "send", to: { user: c.user.id }, text: "not in a-b" });
    const page1 = (await a.client.request({ type: "history", with: { user: b.user.id }, limit: 5 }))
      .messages as Msg[];
    assertEquals(page1.map((m) => m.text), ["m7", "m8", "m9", "m10", "m11"]);
    const page2 = (await b.client.request({
      type: "history",
      with: { user: a.user.id },
      before: page1[0].id,
      limit: 5,
    }))
      .messages as Msg[];
    assertEquals(page2.map((m) => m.text), ["m2", "m3", "m4", "m5", "m6"]);
    const all = (await a.client.request({ type: "history", with: { user: b.user.id } }))
      .messages as Msg[];
    assertEquals(all.length, 12);

    const group =
      ((await a.client.request({ type: "group.create", name: "h" })).group as { id: number }).id;
    await a.client.request({ type: "send", to: { group }, text: "g1" });
    const gh = (await a.client.request({ type: "history", with: { group } })).messages as Msg[];
    assertEquals(gh.map((m) => m.text), ["g1"]);
    assertEquals((await c.client.request({ type: "history", with: { group } })).code, "forbidden");
    assertEquals(
      (await c.client.request({ type: "history", with: { group: 5555 } })).code,
      "not_found",
    );
    assertEquals(
      (await c.client.request({ type: "history", with: { user: 5555 } })).code,
      "not_found",
    );
    for (const limit of [0, 101, 2.5]) {
      assertEquals(
        (await c.client.request({ type: "history", with: { user: a.user.id }, limit })).code,
        "bad_frame",
      );
    }
    await Promise.all([a, b, c].map((u) => u.client.close()));
  });
});

Deno.test("presence pushes reach friends and co-members on login, logout, drop and node death", async () => {
  await withWorld("chat_presence", async ({ start }) => {
    const env = { HEARTBEAT_MS: "200", NODE_TTL_MS: "60000" };
    const [a, b] = [await start({ nodeId: "pa", env }), await start({ nodeId: "pb", env })];
    const watcher = await loggedIn(a.wsUrl);
    const friend = await loggedIn(b.wsUrl);
    const member = await loggedIn(b.wsUrl);
    await watcher.client.request({ type: "friend.add", user: friend.user.id });
    const group =
      ((await watcher.client.request({ type: "group.create", name: "p" })).group as { id: number })
        .id;
    await member.client.request({ type: "group.join", group });
    const presence = (user: number, online: boolean) => (f: Frame) =>
      f.type === "presence" && f.user === user && f.online === online;

    await friend.client.request({ type: "logout" });
    await watcher.client.next(presence(friend.user.id, false));
    const back = await Client.connect(b.wsUrl);
    await back.request({ type: "login", name: friend.user.name, password: friend.user.password });
    await watcher.client.next(presence(friend.user.id, true));

    // A dropped socket ends its session as well.
    member.client.raw.close();
    await watcher.client.next(presence(member.user.id, false));

    // The node dies: the reaper on the surviving node publishes the offline.
    b.kill("SIGKILL");
    await watcher.client.next((f) =>
      f.type === "presence" && f.user === friend.user.id && f.online === false && f !== undefined
    );
    await watcher.client.close();
  });
});

Deno.test("presence: no flap for friends when a user's node stops and it reconnects elsewhere at once", async () => {
  await withWorld("chat_no_flap", async ({ start, sql }) => {
    // A grace far longer than the test: an offline held for it shows as held, never as a push.
    const env = { PRESENCE_GRACE_MS: "600000" };
    const [a, b] = [await start({ nodeId: "na", env }), await start({ nodeId: "nb", env })];
    const watcher = await loggedIn(b.wsUrl);
    const mover = await loggedIn(a.wsUrl);
    await watcher.client.request({ type: "friend.add", user: mover.user.id });
    // Both logins' online events have reached B before counting from here.
    await eventually(
      async () => await metric(b.url, "parley_bus_events_total", 'type="presence"') >= 2,
      10_000,
      "B to hear both logins",
    );
    const heard = await metric(b.url, "parley_bus_events_total", 'type="presence"');
    const pushed = await metric(b.url, "parley_presence_pushed_total");
    const seen = watcher.client.frames.length;
    a.kill("SIGTERM");
    assertEquals((await mover.client.closed).code, 1001);
    // The drain ends sessions before it sends 1001: the view is offline when the client hears it.
    assertEquals(await stateOf(sql, mover.user.id), "offline");
    const moved = await Client.connect(b.wsUrl);
    assertEquals((await moved.request({ type: "login", token: mover.token })).type, "welcome");
    // B hears the offline (from A's drain) before the online (its own login): the offline is held
    // and the online cancels it. In the other order the offline would stay held.
    await eventually(
      async () => await metric(b.url, "parley_bus_events_total", 'type="presence"') - heard >= 2,
      10_000,
      "B to hear the offline and the online",
    );
    assertEquals(await metric(b.url, "parley_presence_offline_held"), 0);
    assertEquals(await metric(b.url, "parley_presence_pushed_total") - pushed, 0);
    await watcher.client.request({ type: "ping" });
    assertEquals(watcher.client.frames.slice(seen).filter((f) => f.type === "presence"), []);
    await Promise.all([moved.close(), watcher.client.close()]);
  });
});

Deno.test("requests beyond the rate limit answer rate_limited with retryAfterMs", async () => {
  await withWorld("chat_rate", async ({ start }) => {
    const server = await start({ env: { RATE_LIMIT_PER_SEC: "1", RATE_LIMIT_BURST: "5" } });
    const c = await Client.connect(server.wsUrl);
    const started = performance.now();
    const replies = await Promise.all(
      Array.from({ length: 10 }, () => c.request({ type: "ping" })),
    );
    // The burst is spent first. The bucket refills one token a second while the server reads the
    // ten frames, which a busy machine may spread over seconds: a pong for each such token.
    const refilled = Math.floor((performance.now() - started) / 1000);
    assertEquals(replies.slice(0, 5).map((r) => r.type), Array(5).fill("pong"));
    const limited = replies.filter((r) => r.code === "rate_limited");
    const pongs = replies.filter((r) => r.type === "pong").length;
    assertEquals(pongs + limited.length, 10);
    assert(pongs <= 5 + refilled, `${pongs} pongs with ${refilled} tokens refilled`);
    assert(limited.length > 0, "no request was limited");
    assert((limited[0].retryAfterMs as number) > 0);
    await new Promise((r) => setTimeout(r, limited[0].retryAfterMs as number));
    assertEquals((await c.request({ type: "ping" })).type, "pong");
    await c.close();
  });
});

Deno.test("no loss: every message that got `sent` reaches its recipient though a node is SIGKILLed mid-traffic", async () => {
  await withWorld("chat_no_loss", async ({ start, sql }) => {
    const env = { HEARTBEAT_MS: "200", RATE_LIMIT_PER_SEC: "100000", RATE_LIMIT_BURST: "100000" };
    const [a, b] = [await start({ nodeId: "loss-a", env }), await start({ nodeId: "loss-b", env })];
    const pairs = await Promise.all(Array.from({ length: 6 }, async (_, i) => ({
      // Senders and recipients on both nodes, crossing over.
      sender: await loggedIn((i % 2 === 0 ? a : b).wsUrl, "s"),
      recipient: await loggedIn((i % 3 === 0 ? a : b).wsUrl, "r"),
    })));
    const sent = new Map<number, Set<number>>(pairs.map((p) => [p.recipient.user.id, new Set()]));
    let killed = false;
    const senders = pairs.map(async ({ sender, recipient }, i) => {
      for (
        let n = 0;
        n < 400 && !(killed && sender.client.raw.readyState !== WebSocket.OPEN);
        n++
      ) {
        let reply: Frame;
        try {
          reply = await sender.client.request({
            type: "send",
            to: { user: recipient.user.id },
            text: `p${i} n${n}`,
            clientId: `p${i}-${n}`,
          }, 3000);
        } catch {
          return; // the socket died with its node: that send was never confirmed
        }
        if (reply.type === "sent") sent.get(recipient.user.id)!.add(msg(reply).id);
      }
    });
    // Kill node A while the traffic runs.
    await eventually(
      () => [...sent.values()].reduce((n, s) => n + s.size, 0) > 300,
      20_000,
      "traffic",
    );
    killed = true;
    a.kill("SIGKILL");
    await Promise.all(senders);
    const total = [...sent.values()].reduce((n, s) => n + s.size, 0);
    assert(total > 300, `only ${total} messages were confirmed`);
    // Everyone reconnects to the surviving node and collects what waits (nothing was acked).
    for (const { recipient } of pairs) {
      await recipient.client.close();
      const { client: c } = await resume(b.wsUrl, recipient.token);
      const expected = sent.get(recipient.user.id)!;
      const n = await undelivered(sql, recipient.user.id);
      await eventually(
        () => c.frames.filter((f) => f.type === "message").length >= n,
        10_000,
        "replay",
      );
      const ids = c.frames.filter((f) => f.type === "message").map((f) => msg(f).id);
      assertEquals(new Set(ids).size, ids.length, "a message was replayed twice in one login");
      for (const id of expected) {
        assert(ids.includes(id), `message ${id} was confirmed but never delivered`);
      }
      await c.close();
    }
    await Promise.all(pairs.map((p) => p.sender.client.close()));
  });
});

Deno.test("bus: a node whose LISTEN connection was cut catches up from the tables", async () => {
  await withWorld("chat_resync", async ({ start, sql }) => {
    const [a, b] = [await start({ nodeId: "listen-a" }), await start({ nodeId: "listen-b" })];
    const recipient = await loggedIn(a.wsUrl);
    const sender = await loggedIn(b.wsUrl);
    await sql`
      select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'parley:listen-a:listen'`;
    // Sent while node A's LISTEN connection is down: its notification is lost to node A.
    const sent = msg(
      await sender.client.request({
        type: "send",
        to: { user: recipient.user.id },
        text: "missed?",
      }),
    );
    await a.waitForLog((l) => l.event === "bus.resync");
    assertEquals(msg(await recipient.client.next(isMessage("missed?"), 15_000)).id, sent.id);
    // Live delivery works again afterwards.
    await sender.client.request({ type: "send", to: { user: recipient.user.id }, text: "after" });
    await recipient.client.next(isMessage("after"));
    await Promise.all([recipient.client.close(), sender.client.close()]);
  });
});

Deno.test("back-pressure: a socket that stops reading is closed; its messages stay waiting", async () => {
  await withWorld("chat_backpressure", async ({ start, sql }) => {
    const server = await start({
      env: { RATE_LIMIT_PER_SEC: "100000", RATE_LIMIT_BURST: "100000" },
    });
    const slow = await loggedIn(server.wsUrl);
    await slow.client.close();
    const peer = await SilentPeer.connect(server.port);
    try {
      await peer.send({ type: "login", token: slow.token });
      await peer.readUntil((s) => s.includes('"welcome"'));
      // From here on the peer reads nothing: its unsent data piles up on the server.
      const sender = await loggedIn(server.wsUrl);
      const text = "x".repeat(4000);
      const count = 2500; // about 10 MB of pushes, beyond the kernel's buffers and the 4 MiB bound
      // In waves: each `sent` carries the text too, and a sender that has not read 4 MiB of its
      // own replies is just as slow a reader (on a busy machine the batches outran this one).
      const wave = 250;
      const sent: Frame[] = [];
      for (let first = 0; first < count; first += wave) {
        sent.push(
          ...await Promise.all(
            Array.from(
              { length: wave },
              (_, k) =>
                sender.client.request({
                  type: "send",
                  to: { user: slow.user.id },
                  text,
                  clientId: `bp${first + k}`,
                }, 60_000),
            ),
          ),
        );
      }
      assertEquals(sent.filter((r) => r.type === "sent").length, count);
      await eventually(
        async () => await stateOf(sql, slow.user.id) === "offline",
        20_000,
        "slow socket closed",
      );
      const n = await undelivered(sql, slow.user.id);
      assertEquals(n, count);
      await sender.client.close();
    } finally {
      peer.close();
    }
  });
});
