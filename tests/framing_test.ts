/**
 * @module WebSocket framing: JSON errors, unknown types, missing fields, binary and oversize frames,
 * the login deadline, ref echo, and a server bug answered with `internal` while others carry on.
 */
import { assertEquals, assertMatch } from "./support/assert.ts";
import { Client, loggedIn, resume } from "./support/client.ts";
import { withWorld } from "./support/fixture.ts";

Deno.test("framing answers each kind of bad frame and keeps the socket open", async () => {
  await withWorld("framing", async ({ start }) => {
    const server = await start({ env: { MAX_FRAME_BYTES: "1024" } });
    const c = await Client.connect(server.wsUrl);

    c.send("{not json");
    assertEquals((await c.next((f) => f.type === "error")).code, "bad_json");
    c.skipReceived();

    c.send("[1,2]");
    const notObject = await c.next((f) => f.type === "error");
    assertEquals(notObject.code, "bad_frame");
    c.skipReceived();

    const unknown = await c.request({ type: "teleport" });
    assertEquals(unknown.code, "bad_frame");
    assertMatch(unknown.message as string, /teleport/);

    const noType = await c.request({ hello: 1 } as never);
    assertMatch(noType.message as string, /"type"/);

    const missing = await c.request({ type: "register", name: "someone" });
    assertEquals(missing.code, "bad_frame");
    assertMatch(missing.message as string, /"password"/);

    c.send(new Uint8Array([1, 2, 3]));
    const binary = await c.next((f) => f.type === "error" && /Binary/.test(f.message as string));
    assertEquals(binary.code, "bad_frame");

    // Both kinds of ref come back as they were sent.
    c.send({ type: "ping", ref: 42 });
    assertEquals(await c.next((f) => f.ref === 42), { type: "pong", ref: 42 });
    c.send({ type: "ping", ref: "abc" });
    assertEquals(await c.next((f) => f.ref === "abc"), { type: "pong", ref: "abc" });
    c.send({ type: "nope", ref: "bad-ref" });
    assertEquals((await c.next((f) => f.ref === "bad-ref")).code, "bad_frame");
    c.send({ type: "ping", ref: "x".repeat(65) });
    const badRef = await c.next((f) => f.type === "error" && /"ref"/.test(f.message as string));
    assertEquals([badRef.code, badRef.ref], ["bad_frame", undefined]);

    // Still open and serving.
    assertEquals((await c.request({ type: "ping" })).type, "pong");

    c.send({ type: "ping", pad: "x".repeat(2000) });
    assertEquals((await c.closed).code, 1009);
  });
});

Deno.test("framing closes a socket that does not log in within AUTH_TIMEOUT_MS with 1008", async () => {
  await withWorld("framing_auth", async ({ start }) => {
    // Registering (a scrypt hash) can take longer than the timeout on a busy machine: the user is
    // made on a node with the default timeout, and logs in here by token, which hashes nothing slow.
    const setup = await start();
    const { client: first, token } = await loggedIn(setup.wsUrl);
    await first.close();
    const server = await start({ env: { AUTH_TIMEOUT_MS: "1000" } });
    const { client } = await resume(server.wsUrl, token);
    const idle = await Client.connect(server.wsUrl);
    assertEquals((await idle.closed).code, 1008);
    // A logged-in socket is not subject to it: its timer, started before the idle one's, would
    // have fired first.
    assertEquals((await client.request({ type: "ping" })).type, "pong");
    await client.close();
  });
});

Deno.test("framing answers internal for a server-side failure and keeps serving other sockets", async () => {
  await withWorld("framing_internal", async ({ start, sql }) => {
    const server = await start();
    const a = await loggedIn(server.wsUrl);
    const b = await loggedIn(server.wsUrl);
    // A real fault, not a mock: the table the request needs is gone.
    await sql`drop table friends`;
    const reply = await a.client.request({ type: "friend.add", user: b.user.id });
    assertEquals(reply.code, "internal");
    const line = await server.waitForLog((l) => l.event === "ws.internal");
    assertEquals(line.ref, reply.ref);
    assertEquals((await a.client.request({ type: "ping" })).type, "pong");
    assertEquals((await b.client.request({ type: "ping" })).type, "pong");
    const group = await b.client.request({ type: "group.create", name: "still works" });
    assertEquals(group.type, "group.created");
    await Promise.all([a.client.close(), b.client.close()]);
  });
});
