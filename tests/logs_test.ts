/**
 * @module Conversation logs and cursors (PROTOCOL.md v2, issue 13): gapless seq under concurrent
 * senders on two nodes, catch-up from device cursors and deliveredSeq, ordering while live traffic
 * arrives during catch-up, SYNC_LIMIT, unread counts and read receipts, group receipts, history
 * with `after`, bad input, the migration from a version 1 database, and a dropped socket resumed
 * on the other node.
 */
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { Client, eventually, type Frame, loggedIn, resume } from "./support/client.ts";
import { createTestDatabase, withSql } from "./support/context.ts";
import { withWorld } from "./support/fixture.ts";
import { startServer } from "./support/server.ts";
import { TcpProxy } from "./support/tcp_proxy.ts";
import { loadMigrations, migrate } from "../src/db/migrate.ts";
import { hashPassword } from "../src/chat/passwords.ts";

type Msg = {
  id: number;
  seq: number;
  from: { id: number };
  to: Record<string, number>;
  text: string;
};
const msg = (f: Frame) => f.message as Msg;
const messages = (c: Client) => c.frames.filter((f) => f.type === "message").map(msg);
type Conversation = {
  with: Record<string, number>;
  lastSeq: number;
  deliveredSeq: number;
  readSeq: number;
  unread: number;
  truncated?: boolean;
};
const conversation = (welcome: Frame, w: Record<string, number>) =>
  (welcome.conversations as Conversation[]).find((c) =>
    JSON.stringify(c.with) === JSON.stringify(w)
  );

/** Seqs strictly one after the other: in order, no gap, no repeat. */
function assertConsecutive(seqs: number[], from: number, what: string) {
  const bad = seqs.findIndex((s, i) => s !== from + i);
  assert(
    bad === -1,
    `${what}: expected ${from + bad} at ${bad}, got ${seqs.slice(Math.max(0, bad - 3), bad + 5)}`,
  );
}

async function send(c: Client, to: Record<string, number>, text: string): Promise<Msg> {
  const r = await c.request({ type: "send", to, text });
  assertEquals(r.type, "sent", JSON.stringify(r));
  return msg(r);
}

Deno.test("logs: seq is gapless and in commit order under concurrent senders on two nodes", async () => {
  await withWorld("logs_gapless", async ({ start, sql }) => {
    const [a, b] = [await start({ nodeId: "ga" }), await start({ nodeId: "gb" })];
    const owner = await loggedIn(a.wsUrl);
    const created = await owner.client.request({ type: "group.create", name: "busy" });
    const group = (created.group as { id: number }).id;
    const senders = await Promise.all(
      [a, a, b, b, b].map((s) => loggedIn(s.wsUrl)),
    );
    for (const s of senders) await s.client.request({ type: "group.join", group });
    const listenerB = await loggedIn(b.wsUrl);
    await listenerB.client.request({ type: "group.join", group });
    const per = 40;
    // Every sender pipelines all its sends at once: batches on both nodes contend for the log.
    const replies = await Promise.all(
      senders.flatMap((s, k) =>
        Array.from(
          { length: per },
          (_, i) => s.client.request({ type: "send", to: { group }, text: `s${k}-${i}` }),
        )
      ),
    );
    assert(
      replies.every((r) => r.type === "sent"),
      JSON.stringify(replies.find((r) => r.type !== "sent")),
    );
    const total = senders.length * per;
    const rows = await sql<{ id: number; seq: number }[]>`
      select m.id, m.seq from messages m join conversations c on c.id = m.conversation_id
       where c.group_id = ${group} order by m.seq`;
    assertConsecutive(rows.map((r) => r.seq), 1, "seqs in the log");
    const ids = rows.map((r) => r.id);
    assertEquals(ids, [...ids].sort((x, y) => x - y), "ids grow with seq");
    const [{ lastSeq }] = await sql<{ lastSeq: number }[]>`
      select last_seq as "lastSeq" from conversations where group_id = ${group}`;
    assertEquals(lastSeq, total);
    // The replies carry the seqs, each once.
    assertEquals(new Set(replies.map((r) => msg(r).seq)).size, total);
    // Listeners on either node get every seq once, in order.
    for (const l of [owner.client, listenerB.client]) {
      await eventually(() => messages(l).length >= total, 15_000, "every push");
      assertConsecutive(messages(l).map((m) => m.seq), 1, "pushed seqs");
    }
    // A sender gets the others' messages in order and its own as replies, together without gaps.
    const s0 = senders[0].client;
    await eventually(() => messages(s0).length >= total - per, 15_000, "pushes to a sender");
    const seen = s0.frames.filter((f) => f.type === "message" || f.type === "sent").map((f) =>
      msg(f).seq
    );
    assertEquals([...seen].sort((x, y) => x - y), rows.map((r) => r.seq));
    await Promise.all([owner, listenerB, ...senders].map((u) => u.client.close()));
  });
});

Deno.test("catch-up starts at the device's cursor, a new device at deliveredSeq, a second device after the first acknowledged", async () => {
  await withWorld("logs_catchup", async ({ start, sql }) => {
    const env = { LOGIN_POLICY: "multi" };
    const [a, b] = [await start({ nodeId: "ca", env }), await start({ nodeId: "cb", env })];
    const alice = await loggedIn(a.wsUrl);
    const bob = await loggedIn(b.wsUrl);
    const to = { user: bob.user.id };
    for (let i = 1; i <= 5; i++) await send(alice.client, to, `m${i}`);
    await eventually(() => messages(bob.client).length === 5, 10_000, "live pushes");
    assertEquals(messages(bob.client).map((m) => m.seq), [1, 2, 3, 4, 5]);
    // The first device acknowledges up to 3, by cursor.
    bob.client.send({ type: "ack", with: { user: alice.user.id }, seq: 3 });
    await eventually(async () =>
      (await sql`select 1 from device_cursors where seq = 3`).length === 1
    );
    await bob.client.close();

    // The same device, on the other node: from its own cursor.
    const again = await resume(a.wsUrl, bob.token);
    await eventually(() => messages(again.client).length === 2, 10_000, "replay from the cursor");
    assertEquals(messages(again.client).map((m) => m.text), ["m4", "m5"]);
    const c = conversation(again.welcome, { user: alice.user.id })!;
    assertEquals(c, {
      with: { user: alice.user.id },
      lastSeq: 5,
      deliveredSeq: 3,
      readSeq: 0,
      unread: 5,
    });

    // A second device (password login): from the user's deliveredSeq, what no device acknowledged.
    const second = await Client.connect(b.wsUrl);
    await second.request({ type: "login", name: bob.user.name, password: bob.user.password });
    await eventually(() => messages(second).length === 2, 10_000, "replay to a new device");
    assertEquals(messages(second).map((m) => m.seq), [4, 5]);
    // It acknowledges everything (version 1 ack by id); a third device then gets nothing, while
    // the first device still gets what it did not acknowledge itself.
    second.send({ type: "ack", ids: messages(second).map((m) => m.id) });
    await eventually(async () => {
      const [r] = await sql<{ d: number }[]>`
        select delivered_seq as d from user_cursors where user_id = ${bob.user.id}`;
      return r?.d === 5;
    });
    const third = await Client.connect(a.wsUrl);
    const w3 = await third.request({
      type: "login",
      name: bob.user.name,
      password: bob.user.password,
    });
    assertEquals(conversation(w3, { user: alice.user.id })!.deliveredSeq, 5);
    assertEquals((await third.request({ type: "ping" })).type, "pong");
    assertEquals(messages(third), []);
    await again.client.close();
    const fourth = await resume(b.wsUrl, bob.token);
    await eventually(() => messages(fourth.client).length === 2, 10_000, "own cursor again");
    assertEquals(messages(fourth.client).map((m) => m.seq), [4, 5]);

    // A live message reaches every device of bob, and alice's other device.
    const alice2 = await Client.connect(b.wsUrl);
    await alice2.request({ type: "login", name: alice.user.name, password: alice.user.password });
    const m6 = await send(alice.client, to, "m6");
    for (const d of [second, third, fourth.client]) {
      await d.next((f) => f.type === "message" && msg(f).seq === 6);
    }
    assertEquals(msg(await alice2.next((f) => f.type === "message")).id, m6.id);
    await alice.client.request({ type: "ping" });
    assertEquals(messages(alice.client), [], "the sending socket gets `sent`, not a push");
    await Promise.all([alice.client, alice2, second, third, fourth.client].map((x) => x.close()));
  });
});

Deno.test("catch-up keeps seq order without gaps or repeats while live messages arrive during it", async () => {
  await withWorld("logs_live_catchup", async ({ start }) => {
    const env = { RATE_LIMIT_PER_SEC: "100000", RATE_LIMIT_BURST: "100000" };
    const [a, b] = [await start({ nodeId: "la", env }), await start({ nodeId: "lb", env })];
    const sender = await loggedIn(b.wsUrl);
    const other = await loggedIn(a.wsUrl);
    const reader = await loggedIn(a.wsUrl);
    await reader.client.request({ type: "logout" });
    const to = { user: reader.user.id };
    const before = 300;
    await Promise.all(
      Array.from(
        { length: before },
        (_, i) => sender.client.request({ type: "send", to, text: `b${i}` }),
      ),
    );
    // Two senders on both nodes keep writing while the reader logs in and catches up.
    let running = true;
    const writers = [sender, other].map(async (w, k) => {
      let n = 0;
      while (running) await send(w.client, to, `live${k}-${n++}`);
    }).map((p) => p.catch((error) => error as Error));
    const c = await Client.connect(a.wsUrl);
    const welcome = await c.request({
      type: "login",
      name: reader.user.name,
      password: reader.user.password,
    });
    await eventually(
      () => messages(c).length > before + 50,
      20_000,
      "live traffic after the catch-up",
    );
    running = false;
    assertEquals((await Promise.all(writers)).filter(Boolean), []);
    // Every committed message comes: the last one pushed is each conversation's last.
    for (const w of [sender, other]) {
      const h = await c.request({ type: "history", with: { user: w.user.id }, limit: 1 });
      const last = (h.messages as Msg[])[0].seq;
      await eventually(
        () => messages(c).some((m) => m.from.id === w.user.id && m.seq === last),
        10_000,
        "the last message",
      );
    }
    const bySender = new Map<number, number[]>();
    for (const m of messages(c)) {
      const key = m.from.id;
      bySender.set(key, [...(bySender.get(key) ?? []), m.seq]);
    }
    assertConsecutive(bySender.get(sender.user.id)!, 1, "sender's conversation");
    assertConsecutive(bySender.get(other.user.id)!, 1, "other's conversation");
    assert(c.frames.indexOf(welcome) < c.frames.findIndex((f) => f.type === "message"));
    await Promise.all([c, sender.client, other.client].map((x) => x.close()));
  });
});

Deno.test("SYNC_LIMIT replays the last events of a conversation and marks it truncated; history has the rest", async () => {
  await withWorld("logs_sync_limit", async ({ start }) => {
    const server = await start({ env: { SYNC_LIMIT: "3" } });
    const alice = await loggedIn(server.wsUrl);
    const bob = await loggedIn(server.wsUrl);
    const carol = await loggedIn(server.wsUrl);
    await bob.client.request({ type: "logout" });
    for (let i = 1; i <= 5; i++) await send(alice.client, { user: bob.user.id }, `a${i}`);
    for (let i = 1; i <= 2; i++) await send(carol.client, { user: bob.user.id }, `c${i}`);
    const c = await Client.connect(server.wsUrl);
    const welcome = await c.request({
      type: "login",
      name: bob.user.name,
      password: bob.user.password,
    });
    assertEquals(conversation(welcome, { user: alice.user.id }), {
      with: { user: alice.user.id },
      lastSeq: 5,
      deliveredSeq: 0,
      readSeq: 0,
      unread: 5,
      truncated: true,
    });
    assertEquals(conversation(welcome, { user: carol.user.id })!.truncated, undefined);
    await eventually(() => messages(c).length === 5, 10_000, "replay");
    assertEquals(messages(c).map((m) => m.text).sort(), ["a3", "a4", "a5", "c1", "c2"]);
    const h = await c.request({
      type: "history",
      with: { user: alice.user.id },
      before: messages(c)[0].id,
    });
    assertEquals((h.messages as Msg[]).map((m) => m.text), ["a1", "a2"]);
    await Promise.all([c, alice.client, carol.client].map((x) => x.close()));
  });
});

Deno.test("unread counts and read receipts agree across devices and nodes", async () => {
  await withWorld("logs_read", async ({ start, sql }) => {
    const env = { LOGIN_POLICY: "multi" };
    const [a, b] = [await start({ nodeId: "ra", env }), await start({ nodeId: "rb", env })];
    const alice = await loggedIn(a.wsUrl);
    const bob = await loggedIn(b.wsUrl);
    const bob2 = await Client.connect(a.wsUrl);
    await bob2.request({ type: "login", name: bob.user.name, password: bob.user.password });
    const to = { user: bob.user.id };
    for (let i = 1; i <= 3; i++) await send(alice.client, to, `r${i}`);
    await eventually(() => messages(bob.client).length === 3);
    bob.client.send({ type: "read", with: { user: alice.user.id }, seq: 2 });
    // The other user (read receipt) and bob's other device hear of it, whatever node they are on.
    assertEquals(await alice.client.next((f) => f.type === "read"), {
      type: "read",
      with: { user: bob.user.id },
      user: bob.user.id,
      seq: 2,
    });
    assertEquals(await bob2.next((f) => f.type === "read"), {
      type: "read",
      with: { user: alice.user.id },
      user: bob.user.id,
      seq: 2,
    });
    // A read that moves nothing is not pushed; a cursor never moves back.
    bob.client.send({ type: "read", with: { user: alice.user.id }, seq: 1 });
    bob.client.send({ type: "read", with: { user: alice.user.id }, seq: 3 });
    const third = await alice.client.next((f) => f.type === "read" && f.seq !== 2);
    assertEquals(third.seq, 3);
    assertEquals(
      bob.client.frames.filter((f) => f.type === "read"),
      [],
      "not to the reading socket",
    );
    await bob.client.close();
    const again = await resume(b.wsUrl, bob.token);
    assertEquals(conversation(again.welcome, { user: alice.user.id })!.unread, 0);
    assertEquals(conversation(again.welcome, { user: alice.user.id })!.readSeq, 3);
    // Alice's own messages are never unread for her, and her readSeq moved with her sends.
    await send(bob2, { user: alice.user.id }, "reply");
    const alice2 = await Client.connect(b.wsUrl);
    const wa = await alice2.request({
      type: "login",
      name: alice.user.name,
      password: alice.user.password,
    });
    assertEquals(conversation(wa, { user: bob.user.id }), {
      with: { user: bob.user.id },
      lastSeq: 4,
      deliveredSeq: 3,
      readSeq: 3,
      unread: 1,
    });
    const [row] = await sql<{ r: number }[]>`
      select read_seq as r from user_cursors where user_id = ${bob.user.id}`;
    assertEquals(row.r, 4);
    await Promise.all([alice.client, alice2, bob2, again.client].map((x) => x.close()));
  });
});

Deno.test("receipts answers each group member's deliveredSeq and readSeq; joining starts at lastSeq", async () => {
  await withWorld("logs_receipts", async ({ start }) => {
    const server = await start();
    const owner = await loggedIn(server.wsUrl);
    const member = await loggedIn(server.wsUrl);
    const outsider = await loggedIn(server.wsUrl);
    const group = ((await owner.client.request({ type: "group.create", name: "r" })).group as {
      id: number;
    }).id;
    await member.client.request({ type: "group.join", group });
    for (let i = 1; i <= 3; i++) await send(owner.client, { group }, `g${i}`);
    await eventually(() => messages(member.client).length === 3);
    member.client.send({ type: "ack", with: { group }, seq: 3 });
    member.client.send({ type: "read", with: { group }, seq: 2 });
    await eventually(
      async () => {
        const r = await owner.client.request({ type: "receipts", group });
        return JSON.stringify(r.members) === JSON.stringify([
          { id: owner.user.id, deliveredSeq: 3, readSeq: 3 },
          { id: member.user.id, deliveredSeq: 3, readSeq: 2 },
        ]);
      },
      10_000,
      "receipts",
    );
    // A member who joins now starts at lastSeq: nothing unread, nothing to catch up.
    await outsider.client.request({ type: "group.join", group });
    const r = await owner.client.request({ type: "receipts", group });
    assertEquals((r.members as unknown[])[2], {
      id: outsider.user.id,
      deliveredSeq: 3,
      readSeq: 3,
    });
    const late = await loggedIn(server.wsUrl);
    assertEquals((await late.client.request({ type: "receipts", group })).code, "forbidden");
    assertEquals(
      (await late.client.request({ type: "receipts", group: 999999 })).code,
      "not_found",
    );
    assertEquals(conversation(late.welcome, { group }), undefined, "not a member's conversation");
    await outsider.client.close();
    const back = await resume(server.wsUrl, outsider.token);
    assertEquals(conversation(back.welcome, { group }), {
      with: { group },
      lastSeq: 3,
      deliveredSeq: 3,
      readSeq: 3,
      unread: 0,
    });
    assertEquals((await back.client.request({ type: "ping" })).type, "pong");
    assertEquals(messages(back.client), []);
    await Promise.all(
      [owner.client, member.client, late.client, back.client].map((c) => c.close()),
    );
  });
});

Deno.test("history pages forward with after, and carries seq", async () => {
  await withWorld("logs_history_after", async ({ start }) => {
    const server = await start();
    const alice = await loggedIn(server.wsUrl);
    const bob = await loggedIn(server.wsUrl);
    const sent: Msg[] = [];
    for (let i = 1; i <= 7; i++) {
      sent.push(
        await send(
          i % 2 ? alice.client : bob.client,
          i % 2 ? { user: bob.user.id } : { user: alice.user.id },
          `h${i}`,
        ),
      );
    }
    const page = async (extra: Record<string, number>) =>
      (await alice.client.request({ type: "history", with: { user: bob.user.id }, ...extra }))
        .messages as Msg[];
    assertEquals((await page({ after: sent[1].id, limit: 3 })).map((m) => m.seq), [3, 4, 5]);
    assertEquals((await page({ after: sent[4].id })).map((m) => m.text), ["h6", "h7"]);
    assertEquals(await page({ after: sent[6].id }), []);
    assertEquals((await page({ after: sent[0].id, before: sent[3].id })).map((m) => m.seq), [2, 3]);
    assertEquals((await page({ before: sent[3].id, limit: 2 })).map((m) => m.seq), [2, 3]);
    const r = await alice.client.request({
      type: "history",
      with: { user: bob.user.id },
      after: 0,
    });
    assertEquals(r.code, "bad_frame");
    assertMatch(r.message as string, /"after"/);
    await Promise.all([alice.client.close(), bob.client.close()]);
  });
});

Deno.test("ack and read refuse conversations the user is not in and seqs beyond the last, changing nothing", async () => {
  await withWorld("logs_bad_input", async ({ start, sql }) => {
    const server = await start();
    const alice = await loggedIn(server.wsUrl);
    const bob = await loggedIn(server.wsUrl);
    const stranger = await loggedIn(server.wsUrl);
    const group = ((await alice.client.request({ type: "group.create", name: "x" })).group as {
      id: number;
    }).id;
    const one = await send(alice.client, { user: bob.user.id }, "one");
    const inGroup = await send(alice.client, { group }, "g");
    const cursors = async () =>
      await sql`select * from user_cursors order by user_id, conversation_id`;
    const before = JSON.stringify(await cursors());
    for (const type of ["ack", "read"]) {
      const c = bob.client;
      const notMember = await c.request({ type, with: { group }, seq: 1 });
      assertEquals(notMember.code, "not_found", type);
      const noGroup = await c.request({ type, with: { group: 999999 }, seq: 1 });
      assertEquals(noGroup.code, "not_found", type);
      const noUser = await c.request({ type, with: { user: 999999 }, seq: 0 });
      assertEquals(noUser.code, "not_found", type);
      const beyond = await c.request({ type, with: { user: alice.user.id }, seq: 2 });
      assertEquals(beyond.code, "bad_frame", type);
      assertMatch(beyond.message as string, /"seq"/);
      const empty = await stranger.client.request({ type, with: { user: bob.user.id }, seq: 1 });
      assertEquals(empty.code, "bad_frame", `${type}: no event yet`);
      for (const seq of [-1, 1.5, "2"]) {
        const bad = await c.request({ type, with: { user: alice.user.id }, seq });
        assertEquals(bad.code, "bad_frame", `${type} seq ${seq}`);
        assertMatch(bad.message as string, /"seq"/);
      }
      assertEquals((await c.request({ type, seq: 1 })).code, "bad_frame");
    }
    assertEquals(
      (await bob.client.request({ type: "ack", ids: [1], with: { group }, seq: 1 })).code,
      "bad_frame",
    );
    // v1 acks of ids the user cannot see are ignored, as before: no such message, another pair's
    // message, a group's message to one who is not a member.
    bob.client.send({ type: "ack", ids: [999999, inGroup.id] });
    stranger.client.send({ type: "ack", ids: [one.id, inGroup.id] });
    await bob.client.request({ type: "ping" });
    await stranger.client.request({ type: "ping" });
    assertEquals(JSON.stringify(await cursors()), before);
    // Forward only: a later ack of a lower seq leaves the cursors where they are. A socket runs
    // an ack before the requests after it, so the ping's answer comes after its write.
    await send(alice.client, { user: bob.user.id }, "two");
    bob.client.send({ type: "ack", with: { user: alice.user.id }, seq: 2 });
    bob.client.send({ type: "read", with: { user: alice.user.id }, seq: 2 });
    bob.client.send({ type: "ack", with: { user: alice.user.id }, seq: 1 });
    bob.client.send({ type: "read", with: { user: alice.user.id }, seq: 1 });
    bob.client.send({ type: "ack", ids: [messages(bob.client)[0].id] });
    await bob.client.request({ type: "ping" });
    const [mine] = await sql<{ d: number; r: number }[]>`
      select delivered_seq as d, read_seq as r from user_cursors where user_id = ${bob.user.id}`;
    assertEquals(mine, { d: 2, r: 2 });
    const [device] = await sql<{ seq: number }[]>`select seq from device_cursors`;
    assertEquals(device.seq, 2);
    await Promise.all([alice, bob, stranger].map((u) => u.client.close()));
  });
});

Deno.test("migration 2 turns a version 1 database's waiting messages into cursors: nothing lost, nothing twice", async () => {
  const db = await createTestDatabase("logs_migration");
  try {
    const all = await loadMigrations();
    const hash = await hashPassword("password-1");
    const ids = await withSql(db.url, async (sql) => {
      await migrate(sql, all.filter((m) => m.version === 1));
      const [u1, u2, u3] = await sql<{ id: number }[]>`
        insert into users (name, password_hash)
        values ('mig1', ${hash}), ('mig2', ${hash}), ('mig3', ${hash}) returning id`;
      const [g] = await sql<{ id: number }[]>`
        insert into groups (name, created_by) values ('old', ${u1.id}) returning id`;
      await sql`insert into group_members (group_id, user_id, role)
                values (${g.id}, ${u1.id}, 'creator'), (${g.id}, ${u2.id}, 'member'),
                       (${g.id}, ${u3.id}, 'member')`;
      const direct = async (from: number, to: number, body: string) =>
        (await sql<{ id: number }[]>`
          insert into messages (sender_id, recipient_id, body) values (${from}, ${to}, ${body})
          returning id`)[0].id;
      const grouped = async (body: string) =>
        (await sql<{ id: number }[]>`
          insert into messages (sender_id, group_id, body) values (${u1.id}, ${g.id}, ${body})
          returning id`)[0].id;
      await direct(u1.id, u2.id, "d1");
      await grouped("g1");
      await direct(u2.id, u1.id, "d2");
      const m3 = await direct(u1.id, u2.id, "d3");
      const g2 = await grouped("g2");
      const m4 = await direct(u1.id, u2.id, "d4");
      const g3 = await grouped("g3");
      // Waiting: u2 has d3, d4, g2, g3 to come; u1 and u3 acknowledged everything.
      for (const m of [m3, m4, g2, g3]) {
        await sql`insert into waiting_messages (user_id, message_id) values (${u2.id}, ${m})`;
      }
      assertEquals(await migrate(sql, all), all.slice(1).map((m) => m.version));
      const seqs = await sql<{ body: string; seq: number }[]>`
        select body, seq from messages order by id`;
      assertEquals(seqs.map((r) => `${r.body}:${r.seq}`), [
        "d1:1",
        "g1:1",
        "d2:2",
        "d3:3",
        "g2:2",
        "d4:4",
        "g3:3",
      ]);
      return { u1: u1.id, u2: u2.id, u3: u3.id, g: g.id };
    });

    const server = await startServer({ databaseUrl: db.url });
    try {
      const login = async (name: string) => {
        const c = await Client.connect(server.wsUrl);
        const w = await c.request({ type: "login", name, password: "password-1" });
        assertEquals(w.type, "welcome");
        await c.request({ type: "ping" });
        return { c, w };
      };
      const two = await login("mig2");
      await eventually(() => messages(two.c).length === 4, 10_000, "what waited");
      assertEquals(messages(two.c).map((m) => m.text).sort(), ["d3", "d4", "g2", "g3"]);
      assertEquals(conversation(two.w, { user: ids.u1 }), {
        with: { user: ids.u1 },
        lastSeq: 4,
        deliveredSeq: 2,
        readSeq: 2,
        unread: 2,
      });
      assertEquals(conversation(two.w, { group: ids.g }), {
        with: { group: ids.g },
        lastSeq: 3,
        deliveredSeq: 1,
        readSeq: 1,
        unread: 2,
      });
      for (const name of ["mig1", "mig3"]) {
        const other = await login(name);
        assertEquals(messages(other.c), [], `${name} gets nothing again`);
        await other.c.close();
      }
      // A new message continues the log.
      const one = await login("mig1");
      const next = await send(one.c, { user: ids.u2 }, "d5");
      assertEquals(next.seq, 5);
      await Promise.all([one.c.close(), two.c.close()]);
    } finally {
      await server.stop();
    }
  } finally {
    await db.drop();
  }
});

Deno.test("a socket dropped mid-stream and resumed by token on the other node gets every seq, once after dropping repeats", async () => {
  await withWorld("logs_drop_resume", async ({ start }) => {
    const env = { RATE_LIMIT_PER_SEC: "100000", RATE_LIMIT_BURST: "100000" };
    const [a, b] = [await start({ nodeId: "da", env }), await start({ nodeId: "db", env })];
    const proxy = TcpProxy.start({ hostname: "127.0.0.1", port: a.port });
    try {
      const sender = await loggedIn(b.wsUrl);
      const first = await loggedIn(proxy.wrap(a.wsUrl));
      const to = { user: first.user.id };
      const peer = { user: sender.user.id };
      const total = 400;
      let sent = 0;
      const writer = (async () => {
        while (sent < total) {
          const batch = Array.from(
            { length: 10 },
            () => sender.client.request({ type: "send", to, text: `x${sent++}` }),
          );
          await Promise.all(batch);
        }
      })();
      // The recipient acknowledges by cursor as it goes, then its connection is cut mid-stream.
      let acked = 0;
      await eventually(
        () => {
          const got = messages(first.client);
          const last = got.at(-1)?.seq ?? 0;
          if (last - acked >= 25) {
            first.client.send({ type: "ack", with: peer, seq: last });
            acked = last;
          }
          return last >= 150;
        },
        20_000,
        "traffic before the cut",
      );
      proxy.resetAll();
      await first.client.closed;
      const again = await resume(b.wsUrl, first.token);
      await writer;
      await eventually(() => (messages(again.client).at(-1)?.seq ?? 0) === total, 20_000, "all");
      const before = messages(first.client).map((m) => m.seq);
      const after = messages(again.client).map((m) => m.seq);
      assertConsecutive(before, 1, "before the cut");
      assertConsecutive(after, after[0], "after the resume");
      assert(after[0] <= acked + 1 && after[0] >= 1, `resumed at ${after[0]}, acked ${acked}`);
      assert(after[0] <= before.at(-1)! + 1, "no gap between the two sockets");
      const union = [...new Set([...before, ...after])].sort((x, y) => x - y);
      assertConsecutive(union, 1, "every seq exactly once after dropping repeats");
      assertEquals(union.length, total);
      await Promise.all([sender.client.close(), again.client.close()]);
    } finally {
      await proxy.close();
    }
  });
});
