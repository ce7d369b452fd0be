/**
 * @module The NATS bus against a real three-server NATS cluster (`nats-server`, routed on loopback
 * ports): chat across three nodes, routing only to the nodes that hold recipients, the loss of a
 * server and of all of them with nothing lost, bad payloads, and a malformed BUS_URL.
 */
import { connect } from "@nats-io/transport-node";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { Client, eventually, type Frame, loggedIn } from "./support/client.ts";
import { withWorld, type World } from "./support/fixture.ts";
import { type NatsCluster, withNats } from "./support/nats.ts";
import { runMain, type ServerProcess } from "./support/server.ts";
import { encode, nodeSubject } from "../src/realtime/bus/nats.ts";
import type { BusEvent, Delivery } from "../src/realtime/bus.ts";

type Msg = { id: number; text: string; to: unknown };
const msg = (f: Frame) => f.message as Msg;
const isMessage = (text: string) => (f: Frame) => f.type === "message" && msg(f).text === text;
const RELAXED = { RATE_LIMIT_PER_SEC: "100000", RATE_LIMIT_BURST: "100000" };

Deno.test("nats payloads keep publish order, one event type each, under 256 KiB, every message once", () => {
  const item = (id: number, text: string): Delivery => ({
    message: {
      id,
      seq: id,
      from: { id: 1, name: "a" },
      to: { user: 2 },
      text,
      at: new Date(0).toISOString(),
    },
    conversation: 1,
    recipients: [2],
  });
  const events: BusEvent[] = [
    { type: "presence", user: 1, online: true },
    ...Array.from({ length: 300 }, (_, i) => ({
      type: "messages" as const,
      origin: "n",
      items: [item(i + 1, "漢".repeat(1000 + i))],
    })),
    { type: "friend", user: 1, friend: 2 },
    { type: "messages", origin: "n", items: [item(1000, "after")] },
  ];
  const payloads = encode(events);
  const seen: number[] = [];
  const kinds: string[] = [];
  for (const p of payloads) {
    assert(new TextEncoder().encode(p).length <= 256 * 1024, `a payload of ${p.length} characters`);
    const list = JSON.parse(p) as BusEvent[];
    assertEquals(new Set(list.map((e) => e.type)).size, 1, "a payload mixes event types");
    kinds.push(list[0].type);
    for (const e of list) if (e.type === "messages") seen.push(...e.items.map((i) => i.message.id));
  }
  assertEquals(seen, [...Array.from({ length: 300 }, (_, i) => i + 1), 1000]);
  // Runs in publish order: presence, the messages (cut into several payloads), friend, messages.
  assertEquals(kinds[0], "presence");
  assertEquals(kinds.at(-2), "friend");
  assertEquals(kinds.at(-1), "messages");
  assert(kinds.length > 4, `${kinds.length} payloads: 900 KB of messages were not cut`);
});

/** A world whose nodes share a fresh NATS cluster as their bus. */
async function withNatsWorld(
  label: string,
  fn: (w: World & { nats: NatsCluster; node: (id: string) => Promise<ServerProcess> }) => Promise<
    void
  >,
): Promise<void> {
  await withNats(async (nats) => {
    await withWorld(label, async (world) => {
      const node = (nodeId: string) =>
        world.start({ nodeId, env: { BUS_URL: nats.busUrl, ...RELAXED } });
      await fn({ ...world, nats, node });
    });
  });
}

/** This node's `parley_bus_messages_received_total`, summed over kinds. */
async function busReceived(server: ServerProcess): Promise<number> {
  const text = await fetch(`${server.url}/metrics`).then((r) => r.text());
  let sum = 0;
  for (const m of text.matchAll(/^parley_bus_messages_received_total\{[^}]*\} (\d+)/gm)) {
    sum += Number(m[1]);
  }
  return sum;
}

const health = (s: ServerProcess) =>
  fetch(`${s.url}/healthz`).then(async (r) => ({ status: r.status, body: await r.json() }));

Deno.test("nats bus carries direct, group, presence, friend, typing and leave pushes across three nodes", async () => {
  await withNatsWorld("nats_chat", async ({ node }) => {
    const [a, b, c] = [await node("nc-a"), await node("nc-b"), await node("nc-c")];
    assertEquals((await health(a)).body.bus, "connected");
    const alice = await loggedIn(a.wsUrl, "alice");
    const bob = await loggedIn(b.wsUrl, "bob");
    const carol = await loggedIn(c.wsUrl, "carol");

    // Friend pushes, and presence to a friend on another node.
    await alice.client.request({ type: "friend.add", user: bob.user.id });
    await bob.client.next((f) => f.type === "friend.added");
    await alice.client.request({ type: "friend.add", user: carol.user.id });
    await carol.client.next((f) => f.type === "friend.added");

    // Direct messages both ways between nodes.
    await alice.client.request({ type: "send", to: { user: bob.user.id }, text: "a to b" });
    await bob.client.next(isMessage("a to b"));
    await carol.client.request({ type: "send", to: { user: alice.user.id }, text: "c to a" });
    await alice.client.next(isMessage("c to a"));

    // A group spread over three nodes: member pushes and messages.
    const group =
      ((await alice.client.request({ type: "group.create", name: "trio" })).group as { id: number })
        .id;
    await bob.client.request({ type: "group.join", group });
    await alice.client.next((f) => f.type === "group.member");
    await carol.client.request({ type: "group.join", group });
    await bob.client.next((f) => f.type === "group.member" && f.group === group);
    await bob.client.request({ type: "send", to: { group }, text: "to the trio" });
    await alice.client.next(isMessage("to the trio"));
    await carol.client.next(isMessage("to the trio"));

    // Presence: carol leaves and comes back on another node; alice (friend) and bob (co-member)
    // hear both.
    const presence = (online: boolean) => (f: Frame) =>
      f.type === "presence" && f.user === carol.user.id && f.online === online;
    await carol.client.close();
    await alice.client.next(presence(false));
    await bob.client.next(presence(false));
    const back = await Client.connect(b.wsUrl);
    await back.request({ type: "login", name: carol.user.name, password: carol.user.password });
    await alice.client.next(presence(true));

    // Typing, in a group and between two users, reaches the other nodes.
    // Typing has no reply.
    alice.client.send({ type: "typing", to: { group } });
    await back.next((f) => f.type === "typing" && f.from === alice.user.id);
    alice.client.send({ type: "typing", to: { user: bob.user.id } });
    await bob.client.next((f) =>
      f.type === "typing" && f.from === alice.user.id && (f.with as { user?: number }).user ===
        alice.user.id
    );
    // Leaving a group and ending a friendship are pushed across nodes as well.
    assertEquals((await back.request({ type: "group.leave", group })).type, "group.left");
    await alice.client.next((f) => f.type === "group.member.left" && f.user === carol.user.id);
    await alice.client.request({ type: "friend.remove", user: bob.user.id });
    await bob.client.next((f) => f.type === "friend.removed" && f.user === alice.user.id);
    await Promise.all([alice.client.close(), bob.client.close(), back.close()]);
  });
});

Deno.test("nats bus: a takeover closes the older socket on another node with 4001", async () => {
  await withNats(async (nats) => {
    await withWorld("nats_takeover", async ({ start }) => {
      const env = { BUS_URL: nats.busUrl, LOGIN_POLICY: "takeover" };
      const [a, b] = [
        await start({ nodeId: "nt-a", env }),
        await start({ nodeId: "nt-b", env }),
      ];
      const first = await loggedIn(a.wsUrl);
      const second = await Client.connect(b.wsUrl);
      const welcome = await second.request({
        type: "login",
        name: first.user.name,
        password: first.user.password,
      });
      assertEquals(welcome.type, "welcome");
      assertEquals((await first.client.closedWithin(10_000)).code, 4001);
      await second.close();
    });
  });
});

Deno.test("nats bus: a node that holds no recipients receives next to nothing", async () => {
  await withNatsWorld("nats_routing", async ({ node }) => {
    const [a, b, c] = [await node("nr-a"), await node("nr-b"), await node("nr-c")];
    const sender = await loggedIn(a.wsUrl);
    const recipient = await loggedIn(b.wsUrl);
    const bystander = await loggedIn(c.wsUrl); // on node C, no contact of anyone
    await sender.client.request({ type: "friend.add", user: recipient.user.id });
    const group = ((await sender.client.request({ type: "group.create", name: "pair" })).group as {
      id: number;
    }).id;
    await recipient.client.request({ type: "group.join", group });
    const before = await busReceived(c);
    const n = 100;
    for (let i = 0; i < n; i++) {
      const to = i % 2 === 0 ? { user: recipient.user.id } : { group };
      await sender.client.request({ type: "send", to, text: `r${i}` });
    }
    await recipient.client.next(isMessage(`r${n - 1}`));
    assert(await busReceived(b) >= 1, "node B received nothing from the bus");
    const atC = (await busReceived(c)) - before;
    assert(atC <= 2, `node C, which holds none of the recipients, received ${atC} bus messages`);
    await Promise.all([sender, recipient, bystander].map((u) => u.client.close()));
  });
});

Deno.test("nats bus: losing the NATS server a node uses, mid-traffic, loses no message", async () => {
  await withNatsWorld("nats_failover", async ({ node, nats }) => {
    const [a, b] = [await node("nf-a"), await node("nf-b")];
    const pairs = await Promise.all(Array.from({ length: 4 }, async (_, i) => ({
      sender: await loggedIn((i % 2 === 0 ? a : b).wsUrl, "s"),
      recipient: await loggedIn((i % 2 === 0 ? b : a).wsUrl, "r"),
    })));
    const sent = pairs.map(() => new Set<number>());
    let stop = false;
    const traffic = pairs.map(async ({ sender, recipient }, i) => {
      for (let n = 0; !stop; n++) {
        const reply = await sender.client.request({
          type: "send",
          to: { user: recipient.user.id },
          text: `f${i}-${n}`,
        });
        assertEquals(reply.type, "sent");
        sent[i].add(msg(reply).id);
      }
    });
    const total = () => sent.reduce((n, s) => n + s.size, 0);
    await eventually(() => total() > 100, 20_000, "traffic before the kill");
    const server = await nats.serverOf("nf-b");
    assert(server >= 0, "node B is connected to no NATS server");
    const serverOfA = await nats.serverOf("nf-a");
    await nats.kill(server);
    await b.waitForLog((l) => l.event === "bus.reconnected");
    if (serverOfA !== server) {
      // Node A kept its server, but B published to it just before the cut: B asks it to resync.
      await a.waitForLog((l) => l.event === "bus.resync" && l.reason === "a publisher reconnected");
    }
    const atKill = total();
    await eventually(() => total() > atKill + 100, 20_000, "traffic after the kill");
    stop = true;
    await Promise.all(traffic);
    // Every confirmed message reaches its recipient's socket, live or by the resync's catch-up.
    for (const [i, { recipient }] of pairs.entries()) {
      const got = () =>
        new Set(recipient.client.frames.filter((f) => f.type === "message").map((f) => msg(f).id));
      await eventually(
        () => [...sent[i]].every((id) => got().has(id)),
        20_000,
        `pair ${i}'s ${sent[i].size} messages`,
      );
    }
    await Promise.all(pairs.flatMap((p) => [p.sender.client.close(), p.recipient.client.close()]));
  });
});

Deno.test("nats bus: with every NATS server down nodes serve and sends commit; delivery resumes", async () => {
  await withNatsWorld("nats_outage", async ({ node, nats, sql }) => {
    const [a, b] = [await node("no-a"), await node("no-b")];
    const sender = await loggedIn(a.wsUrl);
    const recipient = await loggedIn(b.wsUrl);
    await sender.client.request({ type: "send", to: { user: recipient.user.id }, text: "before" });
    await recipient.client.next(isMessage("before"));

    await Promise.all([0, 1, 2].map((i) => nats.kill(i)));
    await a.waitForLog((l) => l.event === "bus.disconnected");
    await eventually(async () => (await health(a)).body.bus === "disconnected", 10_000, "state");
    assertEquals((await health(a)).status, 200);
    const during = msg(
      await sender.client.request({
        type: "send",
        to: { user: recipient.user.id },
        text: "during",
      }),
    );
    assertEquals((await sql`select 1 from messages where id = ${during.id}`).length, 1);
    // A login while the bus is down still gets what waits.
    const late = await loggedIn(a.wsUrl);
    await sender.client.request({ type: "send", to: { user: late.user.id }, text: "waiting" });
    await late.client.close();
    const again = await Client.connect(b.wsUrl);
    await again.request({ type: "login", name: late.user.name, password: late.user.password });
    await again.next(isMessage("waiting"));

    // A node that starts meanwhile serves too, and joins the bus when a server answers.
    const c = await node("no-c");
    assertEquals((await health(c)).body.bus, "connecting");

    await Promise.all([0, 1, 2].map((i) => nats.restart(i)));
    await nats.waitForRoutes();
    await recipient.client.next(isMessage("during"), 20_000);
    await eventually(async () => (await health(b)).body.bus === "connected", 10_000, "state");
    await c.waitForLog((l) => l.event === "bus.connected");
    await sender.client.request({ type: "send", to: { user: recipient.user.id }, text: "after" });
    await recipient.client.next(isMessage("after"), 20_000);
    await Promise.all([sender.client.close(), recipient.client.close(), again.close()]);
  });
});

Deno.test("nats bus: a payload that does not decode is logged and dropped, and the node carries on", async () => {
  await withNatsWorld("nats_garbage", async ({ node, nats }) => {
    const [a, b] = [await node("ng-a"), await node("ng-b")];
    const sender = await loggedIn(a.wsUrl);
    const recipient = await loggedIn(b.wsUrl);
    const nc = await connect({ servers: nats.url(0) });
    try {
      for (const junk of ["not json", "{}", "[1,2]", '[{"type":"messages"}]', "\u0000\xff"]) {
        nc.publish(nodeSubject("ng-b"), junk);
      }
      await nc.flush();
    } finally {
      await nc.close();
    }
    const bad = await b.waitForLog((l) => l.event === "bus.bad_payload");
    assertMatch(String(bad.subject), /ng-b/);
    // `[{"type":"messages"}]` decodes but breaks the handler: logged, not thrown.
    await b.waitForLog((l) => l.event === "bus.handler_failed");
    await sender.client.request({ type: "send", to: { user: recipient.user.id }, text: "fine" });
    await recipient.client.next(isMessage("fine"));
    assertEquals((await health(b)).status, 200);
    await Promise.all([sender.client.close(), recipient.client.close()]);
  });
});

Deno.test("config: a malformed BUS_URL stops serve with exit code 2 and a sentence naming it", async () => {
  for (
    const url of [
      "http://127.0.0.1:4222",
      "nats://",
      "nats://127.0.0.1",
      "nats://127.0.0.1:99999",
      "nats://127.0.0.1:4222,bogus",
      "nats://a b:4222",
    ]
  ) {
    const out = await runMain(["serve"], {
      BUS_URL: url,
      DATABASE_URL: "postgres://nobody@127.0.0.1:1/none",
      PORT: "0",
    });
    assertEquals(out.code, 2, `BUS_URL "${url}": ${out.stderr}`);
    assertMatch(out.stderr, /Invalid BUS_URL/);
  }
  const embedded = await runMain(["serve"], {
    BUS_URL: "nats://127.0.0.1:4222",
    DATABASE_URL: "",
    PORT: "0",
  });
  assertEquals(embedded.code, 2);
  assertMatch(embedded.stderr, /BUS_URL .*needs DATABASE_URL/);
});
