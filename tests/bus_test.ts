/**
 * @module The PostgreSQL bus's payloads: under NOTIFY's 8000-byte limit whatever the text, and
 * nothing dropped; and a message too large for one notification still crosses nodes.
 */
import { assert, assertEquals } from "./support/assert.ts";
import { loggedIn } from "./support/client.ts";
import { withWorld } from "./support/fixture.ts";
import { split } from "../src/realtime/bus/postgres.ts";
import type { BusEvent, Delivery } from "../src/realtime/bus.ts";

const message = (id: number, text: string): Delivery => ({
  message: {
    id,
    seq: id,
    from: { id: 1, name: "a" },
    to: { user: 2 },
    text,
    at: new Date(0).toISOString(),
  },
  conversation: 1,
  recipients: [2, 3],
});

Deno.test("bus payloads stay under 8000 bytes and carry every message once", () => {
  const items = [
    ...Array.from({ length: 300 }, (_, i) => message(i + 1, `hello ${i}`)),
    ...Array.from({ length: 20 }, (_, i) => message(1000 + i, "漢字".repeat(600))), // 3,600 bytes
    message(5000, "漢".repeat(4000)), // 12,000 bytes: too large alone
  ];
  const payloads = split({ type: "messages", origin: "node-a", items });
  const seen: number[] = [];
  const refs: number[] = [];
  for (const p of payloads) {
    assert(new TextEncoder().encode(p).length < 8000, `a payload of ${p.length} characters`);
    const json = p.startsWith("m:") ? p.slice(p.indexOf("|") + 1) : p;
    for (const event of JSON.parse(json) as BusEvent[]) {
      if (event.type === "messages") seen.push(...event.items.map((i) => i.message.id));
      if (event.type === "message.refs") refs.push(...event.ids);
    }
  }
  assertEquals(refs, [5000]);
  assertEquals(seen.sort((a, b) => a - b), items.slice(0, -1).map((i) => i.message.id));
  assert(payloads.length < 20, `${payloads.length} payloads for 321 messages`);
});

Deno.test("bus carries a message too large for one notification across nodes", async () => {
  await withWorld("bus_large", async ({ start }) => {
    const [a, b] = [await start({ nodeId: "large-a" }), await start({ nodeId: "large-b" })];
    const sender = await loggedIn(a.wsUrl);
    const recipient = await loggedIn(b.wsUrl);
    const text = "漢字かな🎉".repeat(800);
    const sent = await sender.client.request({
      type: "send",
      to: { user: recipient.user.id },
      text,
    });
    assertEquals(sent.type, "sent");
    const got = await recipient.client.next((f) => f.type === "message");
    assertEquals((got.message as { text: string }).text, text);
    await Promise.all([sender.client.close(), recipient.client.close()]);
  });
});
