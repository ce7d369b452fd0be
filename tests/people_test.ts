/**
 * @module People and typing (PROTOCOL.md v2): user.search, friend.remove, user.block and
 * user.unblock, group.leave and typing, each request's success and errors, on two nodes.
 */
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { Client, type Frame, loggedIn, registerUser, resume } from "./support/client.ts";
import { withWorld } from "./support/fixture.ts";
import { searchUsersQuery } from "../src/db/queries/people.ts";

const PASSWORD = "correct horse battery";
const isPush = (type: string) => (f: Frame) => f.type === type && f.ref === undefined;
const isMessage = (text: string) => (f: Frame) =>
  f.type === "message" && (f.message as { text: string }).text === text;
const uid = () => crypto.randomUUID().replaceAll("-", "").slice(0, 8);

/** Registers `name` over `client`; returns its id. */
async function register(client: Client, name: string): Promise<number> {
  const reply = await client.request({ type: "register", name, password: PASSWORD });
  assertEquals(reply.type, "registered", JSON.stringify(reply));
  return (reply.user as { id: number }).id;
}

/** A second socket of a logged-in user (LOGIN_POLICY=multi), on `url`. */
async function device(url: string, token: string): Promise<Client> {
  const client = await Client.connect(url);
  const welcome = await client.request({ type: "login", token });
  assertEquals(welcome.type, "welcome", JSON.stringify(welcome));
  return client;
}

/** The pushes of `type` received so far (frames without a ref). */
const pushes = (client: Client, type: string) => client.frames.filter(isPush(type));

Deno.test("user.search finds a name prefix without regard to case, sorted, at most 20, never oneself", async () => {
  await withWorld("people_search", async ({ start }) => {
    const [a, b] = [await start({ nodeId: "sa" }), await start({ nodeId: "sb" })];
    const p = `q${uid()}`;
    // A socket that never logs in is closed after AUTH_TIMEOUT_MS, which thirty registrations
    // (each a scrypt hash) can outlast on a busy machine: one socket per registration.
    const make = async (name: string) => {
      const c = await Client.connect(b.wsUrl);
      try {
        return await register(c, name);
      } finally {
        await c.close();
      }
    };
    const names = [
      `${p}_x`,
      `${p}Ax`,
      `${p}.dot`,
      `${p}-dash`,
      `${p}aY`,
      `${p.toUpperCase()}B`,
      `${p}xx_y`,
    ];
    const ids = new Map<string, number>();
    for (const name of names) ids.set(name, await make(name));
    const me = await loggedIn(a.wsUrl, p);
    const search = (query: unknown) => me.client.request({ type: "user.search", query });
    const found = async (
      query: string,
    ) => ((await search(query)).users as { id: number; name: string }[]);

    const all = await found(p.toUpperCase());
    const byLower = [...names].sort((x, y) => {
      const [lx, ly] = [x.toLowerCase(), y.toLowerCase()];
      return lx < ly ? -1 : lx > ly ? 1 : 0;
    });
    assertEquals(all, byLower.map((name) => ({ id: ids.get(name)!, name })));
    assert(!all.some((u) => u.id === me.user.id), "never the user itself");
    // `_` and `.` are plain characters, not wildcards.
    assertEquals((await found(`${p}_`)).map((u) => u.name), [`${p}_x`]);
    assertEquals((await found(`${p}.`)).map((u) => u.name), [`${p}.dot`]);
    assertEquals((await found(`${p}ay`)).map((u) => u.name), [`${p}aY`]);
    assertEquals(await found(`${p}%`), []);
    assertEquals(await found(`${p}*`), []);
    assertEquals(await found(`${p}\\`), []);
    assertEquals(await found("é"), []);
    assertEquals(await found(`${p}zzz`), []);

    // At most 20, the first in order.
    const many = `m${uid()}`;
    const made: string[] = [];
    for (let i = 0; i < 23; i++) {
      const name = `${many}${String(i).padStart(2, "0")}`;
      await make(name);
      made.push(name);
    }
    assertEquals((await found(many)).map((u) => u.name), made.slice(0, 20));

    for (const bad of ["", "x".repeat(33), 5, null]) {
      const r = await search(bad);
      assertEquals(r.code, "bad_frame", `query ${JSON.stringify(bad)}`);
      assertMatch(r.message as string, /"query"/);
    }
    assertEquals(await found("x".repeat(32)), []);
    assertEquals((await me.client.request({ type: "user.search" })).code, "bad_frame");
    await me.client.close();
  });
});

Deno.test("user.search is served by the prefix index, not a table scan", async () => {
  await withWorld("people_search_plan", async ({ start, sql }) => {
    await (await start()).stop(); // Migrated.
    await sql`
      insert into users (name, password_hash)
      select 'n' || left(md5(i::text), 20), 'x' from generate_series(1, 5000) as i`;
    await sql`analyze users`;
    const plan = await sql<{ "QUERY PLAN": string }[]>`
      explain ${searchUsersQuery(sql, "n1a", 0, 20)}`;
    const text = plan.map((r) => r["QUERY PLAN"]).join("\n");
    assertMatch(text, /(Index Scan using|Bitmap Index Scan on) users_name_prefix_idx/, text);
    assert(!/Seq Scan/.test(text), text);
  });
});

Deno.test("friend.remove ends the friendship both ways, tells both sides' devices, and stops presence", async () => {
  await withWorld("people_unfriend", async ({ start, sql }) => {
    const env = { LOGIN_POLICY: "multi", PRESENCE_GRACE_MS: "0" };
    const [a, b] = [await start({ nodeId: "ua", env }), await start({ nodeId: "ub", env })];
    const alice = await loggedIn(a.wsUrl, "alice");
    const alice2 = await device(b.wsUrl, alice.token);
    const bob = await loggedIn(b.wsUrl, "bob");
    const carol = await loggedIn(b.wsUrl, "carol");
    await alice.client.request({ type: "friend.add", user: bob.user.id });
    await alice.client.request({ type: "friend.add", user: carol.user.id });

    const removed = await alice.client.request({ type: "friend.remove", user: bob.user.id });
    assertEquals(removed, { type: "friend.removed", ref: removed.ref, user: bob.user.id });
    assertEquals(
      await bob.client.next(isPush("friend.removed")),
      { type: "friend.removed", user: alice.user.id },
    );
    assertEquals(
      await alice2.next(isPush("friend.removed")),
      { type: "friend.removed", user: bob.user.id },
    );
    const rows = await sql`
      select 1 from friends where ${alice.user.id} in (user_id, friend_id)
                              and ${bob.user.id} in (user_id, friend_id)`;
    assertEquals(rows.length, 0);

    // Removing a user who is not a friend succeeds and changes nothing; bad ids are refused.
    const again = await bob.client.request({ type: "friend.remove", user: alice.user.id });
    assertEquals(again.type, "friend.removed");
    assertEquals(
      (await alice.client.request({ type: "friend.remove", user: 987654 })).code,
      "not_found",
    );
    const self = await alice.client.request({ type: "friend.remove", user: alice.user.id });
    assertEquals(self.code, "bad_frame");
    assertMatch(self.message as string, /"user"/);
    assertEquals(
      (await alice.client.request({ type: "friend.remove", user: "x" })).code,
      "bad_frame",
    );

    // Presence between them stops: Bob's logout and return are not pushed to Alice, while
    // Carol's (a friend still, on the same node, after Bob's) are.
    const presence = (user: number, online: boolean) => (f: Frame) =>
      f.type === "presence" && f.user === user && f.online === online;
    await bob.client.request({ type: "logout" });
    await carol.client.request({ type: "logout" });
    await alice.client.next(presence(carol.user.id, false));
    const bobBack = await Client.connect(b.wsUrl);
    await bobBack.request({ type: "login", name: bob.user.name, password: bob.user.password });
    const carolBack = await Client.connect(b.wsUrl);
    await carolBack.request({
      type: "login",
      name: carol.user.name,
      password: carol.user.password,
    });
    await alice.client.next(presence(carol.user.id, true));
    assertEquals(
      alice.client.frames.filter((f) => f.type === "presence" && f.user === bob.user.id),
      [],
    );

    // The remover's asking device got the reply, not a push; the other friendship is untouched.
    assertEquals(pushes(alice.client, "friend.removed"), []);
    const { client: aliceAgain, welcome } = await resume(a.wsUrl, alice.token);
    assertEquals((welcome.friends as { id: number }[]).map((f) => f.id), [carol.user.id]);
    await Promise.all(
      [alice.client, alice2, bob.client, carol.client, bobBack, carolBack, aliceAgain].map((c) =>
        c.close()
      ),
    );
  });
});

Deno.test("friend.remove: presence still flows between former friends who share a group", async () => {
  await withWorld("people_unfriend_group", async ({ start }) => {
    const env = { PRESENCE_GRACE_MS: "0" };
    const [a, b] = [await start({ nodeId: "uga", env }), await start({ nodeId: "ugb", env })];
    const alice = await loggedIn(a.wsUrl);
    const bob = await loggedIn(b.wsUrl);
    await alice.client.request({ type: "friend.add", user: bob.user.id });
    const group = (await alice.client.request({ type: "group.create", name: "g" })).group as {
      id: number;
    };
    await bob.client.request({ type: "group.join", group: group.id });
    await alice.client.request({ type: "friend.remove", user: bob.user.id });
    await bob.client.request({ type: "logout" });
    await alice.client.next((f) => f.type === "presence" && f.user === bob.user.id && !f.online);
    await Promise.all([alice.client.close(), bob.client.close()]);
  });
});

Deno.test("user.block refuses direct messages, typing and friend requests both ways, stores nothing, ends the friendship", async () => {
  await withWorld("people_block", async ({ start, sql }) => {
    const env = { LOGIN_POLICY: "multi" };
    const [a, b] = [await start({ nodeId: "ba", env }), await start({ nodeId: "bb", env })];
    const alice = await loggedIn(a.wsUrl, "alice");
    const alice2 = await device(b.wsUrl, alice.token);
    const bob = await loggedIn(b.wsUrl, "bob");
    await alice.client.request({ type: "friend.add", user: bob.user.id });
    const group = (await alice.client.request({ type: "group.create", name: "shared" })).group as {
      id: number;
    };
    await bob.client.request({ type: "group.join", group: group.id });
    assertEquals(alice.welcome.blocked, []);

    const blocked = await alice.client.request({ type: "user.block", user: bob.user.id });
    assertEquals(blocked, { type: "blocked", ref: blocked.ref, user: bob.user.id });
    // It ends the friendship as friend.remove does, with its pushes.
    assertEquals(await bob.client.next(isPush("friend.removed")), {
      type: "friend.removed",
      user: alice.user.id,
    });
    assertEquals(await alice2.next(isPush("friend.removed")), {
      type: "friend.removed",
      user: bob.user.id,
    });
    const count = async () =>
      (await sql<{ n: number }[]>`
        select count(*)::int as n from messages
         where group_id is null and ${alice.user.id} in (sender_id, recipient_id)
           and ${bob.user.id} in (sender_id, recipient_id)`)[0].n;
    const before = await count();

    for (
      const [from, to] of [[alice, bob], [bob, alice]] as const
    ) {
      const sent = await from.client.request({
        type: "send",
        to: { user: to.user.id },
        text: "hi",
      });
      assertEquals(sent.code, "forbidden");
      assertEquals(sent.message, "This user does not accept your messages");
      const typing = await from.client.request({ type: "typing", to: { user: to.user.id } });
      assertEquals([typing.code, typing.message], ["forbidden", sent.message]);
      const friend = await from.client.request({ type: "friend.add", user: to.user.id });
      assertEquals([friend.code, friend.message], ["forbidden", sent.message]);
    }
    assertEquals(await count(), before);
    assertEquals((await sql`select 1 from friends where user_id = ${alice.user.id}`).length, 0);

    // Group traffic is not affected.
    await bob.client.request({ type: "send", to: { group: group.id }, text: "to the group" });
    await alice.client.next(isMessage("to the group"));

    // Blocking twice succeeds; welcome lists whom the user blocks.
    assertEquals(
      (await alice.client.request({ type: "user.block", user: bob.user.id })).type,
      "blocked",
    );
    const { client: aliceAgain, welcome } = await resume(a.wsUrl, alice.token);
    assertEquals(welcome.blocked, [bob.user.id]);
    const { client: bobAgain, welcome: bobWelcome } = await resume(a.wsUrl, bob.token);
    assertEquals(bobWelcome.blocked, []);

    // Errors, which change nothing.
    for (const type of ["user.block", "user.unblock"]) {
      const self = await alice.client.request({ type, user: alice.user.id });
      assertEquals(self.code, "bad_frame");
      assertMatch(self.message as string, /"user"/);
      assertEquals((await alice.client.request({ type, user: 987654 })).code, "not_found");
      assertEquals((await alice.client.request({ type, user: -1 })).code, "bad_frame");
    }
    assertEquals(
      (await sql`select blocked_id from blocks where user_id = ${alice.user.id}`).map((r) =>
        r.blocked_id
      ),
      [bob.user.id],
    );

    // Unblocking lifts it (twice succeeds too); the friendship does not come back by itself.
    const unblocked = await alice.client.request({ type: "user.unblock", user: bob.user.id });
    assertEquals(unblocked, { type: "unblocked", ref: unblocked.ref, user: bob.user.id });
    assertEquals(
      (await alice.client.request({ type: "user.unblock", user: bob.user.id })).type,
      "unblocked",
    );
    // Bob is blocked by nobody now, but Alice's own block of Bob was the only one.
    const sent = await bob.client.request({
      type: "send",
      to: { user: alice.user.id },
      text: "back",
    });
    assertEquals(sent.type, "sent");
    await alice.client.next(isMessage("back"));
    assertEquals(
      (await alice.client.request({ type: "friend.add", user: bob.user.id })).type,
      "friend.added",
    );
    await Promise.all(
      [alice.client, alice2, bob.client, aliceAgain, bobAgain].map((c) => c.close()),
    );
  });
});

Deno.test("user.block by the other side refuses as well, and a block by either stays until both are lifted", async () => {
  await withWorld("people_block_both", async ({ start }) => {
    const server = await start();
    const alice = await loggedIn(server.wsUrl);
    const bob = await loggedIn(server.wsUrl);
    await bob.client.request({ type: "user.block", user: alice.user.id });
    await alice.client.request({ type: "user.block", user: bob.user.id });
    await bob.client.request({ type: "user.unblock", user: alice.user.id });
    const r = await bob.client.request({ type: "send", to: { user: alice.user.id }, text: "x" });
    assertEquals(r.code, "forbidden");
    await alice.client.request({ type: "user.unblock", user: bob.user.id });
    const ok = await bob.client.request({ type: "send", to: { user: alice.user.id }, text: "x" });
    assertEquals(ok.type, "sent");
    await Promise.all([alice.client.close(), bob.client.close()]);
  });
});

Deno.test("group.leave tells the members and the leaver's other devices; the group's traffic stops for the leaver", async () => {
  await withWorld("people_leave", async ({ start, sql }) => {
    const env = { LOGIN_POLICY: "multi" };
    const [a, b] = [await start({ nodeId: "la", env }), await start({ nodeId: "lb", env })];
    const carol = await loggedIn(a.wsUrl, "carol");
    const dave = await loggedIn(b.wsUrl, "dave");
    const dave2 = await device(a.wsUrl, dave.token);
    const erin = await loggedIn(b.wsUrl, "erin");
    const group = (await carol.client.request({ type: "group.create", name: "Club" })).group as {
      id: number;
    };
    await dave.client.request({ type: "group.join", group: group.id });
    await erin.client.request({ type: "group.join", group: group.id });
    await carol.client.request({ type: "send", to: { group: group.id }, text: "before" });
    await dave.client.next(isMessage("before"));

    const left = await dave.client.request({ type: "group.leave", group: group.id });
    assertEquals(left, { type: "group.left", ref: left.ref, group: group.id });
    const notice = { type: "group.member.left", group: group.id, user: dave.user.id };
    for (const client of [carol.client, erin.client, dave2]) {
      assertEquals(await client.next(isPush("group.member.left")), notice);
    }

    // The group's messages stop for Dave: Carol's later direct message to him arrives, her group
    // message sent just before it does not (one sender's messages are pushed in commit order).
    await carol.client.request({ type: "send", to: { group: group.id }, text: "after" });
    await carol.client.request({ type: "send", to: { user: dave.user.id }, text: "marker" });
    await erin.client.next(isMessage("after"));
    await dave.client.next(isMessage("marker"));
    await dave2.next(isMessage("marker"));
    assert(!dave.client.frames.some(isMessage("after")), "no group message after leaving");
    assert(!dave2.frames.some(isMessage("after")), "no group message after leaving");

    // History, sending and typing are refused; the group is gone from his welcome.
    for (
      const frame of [
        { type: "history", with: { group: group.id } },
        { type: "send", to: { group: group.id }, text: "x" },
        { type: "typing", to: { group: group.id } },
        { type: "group.leave", group: group.id },
      ]
    ) {
      assertEquals((await dave.client.request(frame)).code, "forbidden", frame.type);
    }
    assertEquals(
      (await dave.client.request({ type: "group.leave", group: 987654 })).code,
      "not_found",
    );
    assertEquals(
      (await dave.client.request({ type: "group.leave", group: "x" })).code,
      "bad_frame",
    );
    const { client: daveAgain, welcome } = await resume(b.wsUrl, dave.token);
    assertEquals(welcome.groups, []);

    // The creator leaves, then the last member: the group remains, and joining again shows its
    // whole history.
    await carol.client.request({ type: "group.leave", group: group.id });
    assertEquals(
      await erin.client.next((f) => isPush("group.member.left")(f) && f.user === carol.user.id),
      {
        type: "group.member.left",
        group: group.id,
        user: carol.user.id,
      },
    );
    await erin.client.request({ type: "group.leave", group: group.id });
    assertEquals((await sql`select 1 from groups where id = ${group.id}`).length, 1);
    assertEquals((await sql`select 1 from group_members where group_id = ${group.id}`).length, 0);
    const rejoined = await daveAgain.request({ type: "group.join", group: group.id });
    assertEquals(rejoined.type, "group.joined");
    const history = await daveAgain.request({ type: "history", with: { group: group.id } });
    assertEquals(
      (history.messages as { text: string }[]).map((m) => m.text),
      ["before", "after"],
    );
    await Promise.all(
      [carol.client, dave.client, dave2, erin.client, daveAgain].map((c) => c.close()),
    );
  });
});

Deno.test("typing reaches the other user or the group's other members across nodes, never answered", async () => {
  await withWorld("people_typing", async ({ start }) => {
    const [a, b] = [await start({ nodeId: "ta" }), await start({ nodeId: "tb" })];
    const alice = await loggedIn(a.wsUrl, "alice");
    const bob = await loggedIn(b.wsUrl, "bob");
    const carol = await loggedIn(b.wsUrl, "carol");
    const outsider = await loggedIn(a.wsUrl, "out");

    alice.client.send({ type: "typing", to: { user: bob.user.id } });
    assertEquals(await bob.client.next(isPush("typing")), {
      type: "typing",
      from: alice.user.id,
      with: { user: alice.user.id },
    });

    const group = (await alice.client.request({ type: "group.create", name: "t" })).group as {
      id: number;
    };
    await bob.client.request({ type: "group.join", group: group.id });
    await carol.client.request({ type: "group.join", group: group.id });
    bob.client.skipReceived();
    const typed = { type: "typing", from: carol.user.id, with: { group: group.id } };
    carol.client.send({ type: "typing", to: { group: group.id } });
    assertEquals(await alice.client.next(isPush("typing")), typed);
    assertEquals(await bob.client.next(isPush("typing")), typed);

    // Errors are answered; a notice that passes is not.
    const errors: [Frame, string][] = [
      [{ type: "typing", to: { user: 987654 } }, "not_found"],
      [{ type: "typing", to: { group: 987654 } }, "not_found"],
      [{ type: "typing", to: { group: group.id } }, "forbidden"],
      [{ type: "typing", to: { user: outsider.user.id, group: 1 } }, "bad_frame"],
      [{ type: "typing" }, "bad_frame"],
    ];
    for (const [frame, code] of errors) {
      assertEquals((await outsider.client.request(frame)).code, code, JSON.stringify(frame));
    }
    const self = await outsider.client.request({ type: "typing", to: { user: outsider.user.id } });
    assertEquals(self.code, "bad_frame");
    assertMatch(self.message as string, /"to"/);
    await alice.client.request({ type: "ping" });
    for (const client of [alice.client, carol.client]) {
      assert(!client.frames.some((f) => f.type === "error"), "typing answered with an error");
    }
    // The sender's own devices and the typist are not told.
    assert(!carol.client.frames.some(isPush("typing")), "the typist got its own notice");
    await Promise.all(
      [alice.client, bob.client, carol.client, outsider.client].map((c) => c.close()),
    );
  });
});

Deno.test("typing: at most one per second per sender and conversation is passed on, floods are dropped silently", async () => {
  await withWorld("people_typing_flood", async ({ start }) => {
    const env = { LOGIN_POLICY: "multi", RATE_LIMIT_PER_SEC: "5", RATE_LIMIT_BURST: "5" };
    const [a, b] = [await start({ nodeId: "fa", env }), await start({ nodeId: "fb", env })];
    const alice = await loggedIn(a.wsUrl, "alice");
    const alice2 = await device(b.wsUrl, alice.token);
    const bob = await loggedIn(b.wsUrl, "bob");
    const to = { user: bob.user.id };

    // A flood from two devices on two nodes: far beyond the rate limit, yet never answered.
    const started = performance.now();
    for (let i = 0; i < 100; i++) {
      alice.client.send({ type: "typing", to });
      alice2.send({ type: "typing", to });
    }
    await Promise.all([alice.client.request({ type: "ping" }), alice2.request({ type: "ping" })]);
    const elapsed = performance.now() - started;
    await bob.client.next(isPush("typing"));
    // A message sent after the flood arrives after whatever of it was passed on from that node.
    await alice.client.request({ type: "send", to, text: "after the flood" });
    await bob.client.next(isMessage("after the flood"));
    const passed = pushes(bob.client, "typing").length;
    assert(
      passed >= 1 && passed <= 1 + Math.floor(elapsed / 1000),
      `${passed} notices passed on in ${elapsed} ms`,
    );
    for (const client of [alice.client, alice2]) {
      assert(!client.frames.some((f) => f.type === "error"), "a typing flood was answered");
    }
    // The flood did not spend the socket's rate limit: a request is answered at once.
    assertEquals(
      (await alice.client.request({ type: "friend.add", user: bob.user.id })).type,
      "friend.added",
    );

    // A second later a notice passes again.
    const before = pushes(bob.client, "typing").length;
    await new Promise((resolve) => setTimeout(resolve, 1100));
    alice.client.send({ type: "typing", to });
    await bob.client.next((f) =>
      isPush("typing")(f) && pushes(bob.client, "typing").length > before
    );
    await Promise.all([alice.client, alice2, bob.client].map((c) => c.close()));
  });
});

Deno.test("people requests need a login", async () => {
  await withWorld("people_unauth", async ({ start }) => {
    const server = await start();
    const client = await Client.connect(server.wsUrl);
    await registerUser(client);
    for (
      const frame of [
        { type: "user.search", query: "a" },
        { type: "friend.remove", user: 1 },
        { type: "user.block", user: 1 },
        { type: "user.unblock", user: 1 },
        { type: "group.leave", group: 1 },
        { type: "typing", to: { user: 1 } },
      ]
    ) {
      assertEquals((await client.request(frame)).code, "unauthenticated", frame.type);
    }
    await client.close();
  });
});

Deno.test("group.leave then group.join on the same sockets: the group's stream starts afresh at the new join", async () => {
  await withWorld("people_rejoin", async ({ start }) => {
    const env = { LOGIN_POLICY: "multi" };
    const [a, b] = [await start({ nodeId: "ra", env }), await start({ nodeId: "rb", env })];
    const carol = await loggedIn(a.wsUrl, "carol");
    const dave = await loggedIn(b.wsUrl, "dave");
    const dave2 = await device(a.wsUrl, dave.token);
    const group = (await carol.client.request({ type: "group.create", name: "g" })).group as {
      id: number;
    };
    await dave.client.request({ type: "group.join", group: group.id });
    await carol.client.request({ type: "send", to: { group: group.id }, text: "one" });
    for (const client of [dave.client, dave2]) await client.next(isMessage("one"));
    await dave.client.request({ type: "group.leave", group: group.id });
    await dave2.next(isPush("group.member.left"));
    await carol.client.request({ type: "send", to: { group: group.id }, text: "while away" });
    await dave.client.request({ type: "group.join", group: group.id });
    await carol.client.request({ type: "send", to: { group: group.id }, text: "after" });
    for (const client of [dave.client, dave2]) {
      await client.next(isMessage("after"));
      assert(!client.frames.some(isMessage("while away")), "no message from while away");
    }
    await Promise.all([carol.client, dave.client, dave2].map((c) => c.close()));
  });
});
