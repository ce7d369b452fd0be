/**
 * @module The course protocol on LEGACY_TCP_PORT (issue 8): the splitter and the message shapes on
 * their own, then real server processes with course clients speaking it byte for byte beside real
 * WebSocket clients, on one node and across two, with real SIGTERM and SIGKILL.
 */
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { Client, eventually, type Frame, loggedIn, registerUser } from "./support/client.ts";
import {
  CourseClient,
  type CourseObject,
  parseRead,
  registerCourseUser,
} from "./support/course_client.ts";
import { stateOf, undelivered, withWorld, type World } from "./support/fixture.ts";
import type { ServerOptions, ServerProcess } from "./support/server.ts";
import { type Piece, Splitter } from "../src/legacy/framing.ts";
import { chatObject, courseTime, loginAck } from "../src/legacy/course.ts";

const encoder = new TextEncoder();
const BAD_CREDENTIALS = { msgid: 2, errno: 1, errmsg: "id or password is invalid!" };
const ALREADY_ONLINE = { msgid: 2, errno: 2, errmsg: "this account is using, input another!" };
const COURSE_TIME = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/;

type Msg = { id: number; from: { id: number; name: string }; to: unknown; text: string };
const msg = (f: Frame) => f.message as Msg;
const isMessage = (text: string) => (f: Frame) => f.type === "message" && msg(f).text === text;

/** A server with the course listener on a free port, and that port. */
async function startNode(
  world: World,
  options: Omit<ServerOptions, "databaseUrl"> = {},
): Promise<{ server: ServerProcess; port: number }> {
  const server = await world.start({
    ...options,
    env: { LEGACY_TCP_PORT: "0", ...options.env },
  });
  const line = await server.waitForLog((l) => l.event === "legacy.listening");
  return { server, port: line.port as number };
}

/** Runs `fn` with a factory of course clients, all closed afterwards whatever happened. */
async function withCourse(
  fn: (connect: (port: number, label?: string) => Promise<CourseClient>) => Promise<void>,
): Promise<void> {
  const clients: CourseClient[] = [];
  try {
    await fn(async (port, label) => {
      const client = await CourseClient.connect(port, label);
      clients.push(client);
      return client;
    });
  } finally {
    await Promise.all(clients.map((c) => c.close()));
  }
}

/** Registers and logs in a course user; the login ack must be errno 0. */
async function courseLoggedIn(client: CourseClient, prefix = "c") {
  const user = await registerCourseUser(client, prefix);
  const ack = await client.login(user.id, user.password);
  assertEquals(ack.errno, 0, JSON.stringify(ack));
  return user;
}

const waitingCount = (sql: World["sql"], user: number) => undelivered(sql, user);

// ---------------------------------------------------------------------------------------------
// The splitter and the shapes, without a server.

function objects(pieces: Piece[]): unknown[] {
  return pieces.filter((p) => p.kind === "object").map((p) => (p as { value: unknown }).value);
}

Deno.test("course framing splits several objects per read, objects with no NUL, and strings with braces", () => {
  const s = new Splitter({ maxObjectBytes: 1024 });
  const text = '{"msgid":1,"id":1}\0{"a":"x}{\\"y"}{"b":[1,{"c":2}]}\0\0 \n{"d":"é"}\0';
  const pieces = s.push(encoder.encode(text));
  assertEquals(pieces.map((p) => p.kind), ["object", "object", "object", "object"]);
  assertEquals(objects(pieces), [
    { msgid: 1, id: 1 },
    { a: 'x}{"y' },
    { b: [1, { c: 2 }] },
    { d: "é" },
  ]);
  assertEquals(s.end(), []);
});

Deno.test("course framing joins an object split at every byte, inside strings and characters too", () => {
  const bytes = encoder.encode('{"msg":"a\\"}{ é 你好 😀","n":[{}]}\0{"next":true}\0');
  for (let cut = 0; cut <= bytes.length; cut++) {
    const s = new Splitter({ maxObjectBytes: 1024 });
    const got = [...s.push(bytes.subarray(0, cut)), ...s.push(bytes.subarray(cut)), ...s.end()];
    assertEquals(objects(got), [{ msg: 'a"}{ é 你好 😀', n: [{}] }, { next: true }], `cut ${cut}`);
    assertEquals(got.length, 2, `cut ${cut}`);
  }
});

Deno.test("course framing skips and reports garbage, arrays, bad JSON, bad UTF-8, NUL inside, oversize", () => {
  const s = new Splitter({ maxObjectBytes: 64 });
  const parts: (string | Uint8Array)[] = [
    "hello\0",
    '[{"msgid":3}]\0',
    '{"msgid":}\0',
    new Uint8Array([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d, 0x00]), // {"a":"\xff\xfe"}
    '{"msgid":6,\0',
    `{"long":"${"x".repeat(100)}"}\0`,
    'junk{"ok":1}\0',
    '{"ok":2}trailing\0',
    '{"ok":3}',
  ];
  const pieces: Piece[] = [];
  for (const p of parts) pieces.push(...s.push(typeof p === "string" ? encoder.encode(p) : p));
  pieces.push(...s.end());
  const summary = pieces.map((p) => p.kind === "object" ? p.value : p.reason);
  assertEquals(summary, [
    "text outside an object",
    "an array",
    "invalid JSON",
    "invalid UTF-8",
    "an incomplete object ended by NUL",
    "an object longer than 64 bytes",
    "text outside an object",
    { ok: 1 },
    { ok: 2 },
    "text outside an object",
    { ok: 3 },
  ]);
  // A value cut off by the end of the stream is reported too.
  const cut = new Splitter({ maxObjectBytes: 64 });
  assertEquals(cut.push(encoder.encode('{"a":')), []);
  assertEquals(cut.end().map((p) => p.kind), ["malformed"]);
});

Deno.test("course shapes: login ack strings, keys left out when empty, chat objects, UTC time", () => {
  assertEquals(loginAck({ id: 7, name: "ann" }, [], []), {
    msgid: 2,
    errno: 0,
    id: 7,
    name: "ann",
  });
  const ack = loginAck({ id: 7, name: "ann" }, [{ id: 8, name: "bo", online: true }], [{
    id: 3,
    name: "club",
    description: "d",
    members: [
      { id: 7, name: "ann", role: "creator", online: true },
      { id: 8, name: "bo", role: "member", online: false },
    ],
  }]);
  assertEquals(ack.friends, ['{"id":8,"name":"bo","state":"online"}']);
  assertEquals(ack.groups, [
    JSON.stringify({
      id: 3,
      groupname: "club",
      groupdesc: "d",
      users: [
        '{"id":7,"name":"ann","state":"online","role":"creator"}',
        '{"id":8,"name":"bo","state":"offline","role":"normal"}',
      ],
    }),
  ]);
  assertEquals(courseTime("2024-02-29T23:59:58.123Z"), "2024-02-29 23:59:58");
  const from = { id: 8, name: "bo" };
  const at = "2024-01-02T03:04:05.000Z";
  assertEquals(
    JSON.stringify(chatObject({ id: 1, seq: 1, from, to: { user: 7 }, text: "hi", at })),
    '{"msgid":6,"id":8,"name":"bo","toid":7,"msg":"hi","time":"2024-01-02 03:04:05"}',
  );
  assertEquals(
    JSON.stringify(chatObject({ id: 2, seq: 1, from, to: { group: 3 }, text: "all", at })),
    '{"msgid":10,"id":8,"name":"bo","groupid":3,"msg":"all","time":"2024-01-02 03:04:05"}',
  );
});

// ---------------------------------------------------------------------------------------------
// Against real servers.

Deno.test("course register and login by id; errno 1 for a wrong password or id, and bad registrations", async () => {
  await withWorld("legacy_login", async (world) => {
    const { port } = await startNode(world);
    await withCourse(async (connect) => {
      const c = await connect(port);
      const name = `reg${crypto.randomUUID().slice(0, 8)}`;
      const ok = await c.register(name, "secret-password");
      assertEquals(Object.keys(ok), ["msgid", "errno", "id"]);
      assertEquals([ok.msgid, ok.errno], [5, 0]);
      const id = ok.id as number;

      const taken = await c.register(name.toUpperCase(), "another-password");
      assertEquals([taken.msgid, taken.errno], [5, 1]);
      assertMatch(taken.errmsg as string, /is taken/);
      const short = await c.register(`s${name}`, "short");
      assertEquals([short.msgid, short.errno], [5, 1]);
      assertMatch(short.errmsg as string, /"password": expected at least 8 characters/);
      const badName = await c.register("no spaces allowed", "secret-password");
      assertMatch(badName.errmsg as string, /"name"/);

      assertEquals(await c.login(id, "wrong-password"), BAD_CREDENTIALS);
      assertEquals(await c.login(987654321, "secret-password"), BAD_CREDENTIALS);
      // A login whose fields are not the course's types still gets its answer.
      await c.send({ msgid: 1, id: String(id), password: "secret-password" });
      assertEquals(await c.next(), BAD_CREDENTIALS);

      const ack = await c.login(id, "secret-password");
      assertEquals(ack, { msgid: 2, errno: 0, id, name });
      assertEquals(await stateOf(world.sql, id), "online");
      const [session] = await world.sql`select transport from sessions where user_id = ${id}`;
      assertEquals(session.transport, "tcp");
      // No token is left behind: a course client cannot resume with one.
      assertEquals((await world.sql`select 1 from auth_tokens where user_id = ${id}`).length, 0);
      // The same account works over WebSocket once the course client has gone.
      await c.close();
      await eventually(async () => await stateOf(world.sql, id) === "offline", 5000, "offline");
    });
  });
});

Deno.test("course login answers errno 2 while the user is online over WebSocket or over TCP", async () => {
  await withWorld("legacy_online", async (world) => {
    const [a, b] = [
      await startNode(world, { nodeId: "oa" }),
      await startNode(world, { nodeId: "ob" }),
    ];
    await withCourse(async (connect) => {
      // Online over WebSocket on node A; the course login is on node B.
      const ws = await loggedIn(a.server.wsUrl, "wsuser");
      const c1 = await connect(b.port, "c1");
      assertEquals(await c1.login(ws.user.id, ws.user.password), ALREADY_ONLINE);
      // The WebSocket user leaves: the course login now works, and blocks a WebSocket login.
      await ws.client.close();
      await eventually(async () => (await c1.login(ws.user.id, ws.user.password)).errno === 0);
      const again = await Client.connect(a.server.wsUrl);
      const refused = await again.request({
        type: "login",
        name: ws.user.name,
        password: ws.user.password,
      });
      assertEquals(refused.code, "already_online");
      await again.close();
      // A second course client, on either node, is refused too.
      for (const port of [a.port, b.port]) {
        const c2 = await connect(port, "c2");
        assertEquals(await c2.login(ws.user.id, ws.user.password), ALREADY_ONLINE);
      }
    });
  });
});

Deno.test("course login ack lists friends and groups as strings of JSON, with live state and roles", async () => {
  await withWorld("legacy_ack", async (world) => {
    const { server, port } = await startNode(world);
    await withCourse(async (connect) => {
      const c = await connect(port);
      const me = await registerCourseUser(c, "me");
      const bob = await loggedIn(server.wsUrl, "bob");
      const carol = await Client.connect(server.wsUrl);
      const carolUser = await registerUser(carol, "carol"); // registered, never online

      await bob.client.request({ type: "friend.add", user: me.id });
      const created = await bob.client.request({
        type: "group.create",
        name: "Course alumni",
        description: "muduo forever",
      });
      const groupId = (created.group as { id: number }).id;
      await c.login(me.id, me.password).then((ack) => assertEquals(ack.errno, 0));
      await c.send({ msgid: 7, id: me.id, friendid: carolUser.id });
      await c.send({ msgid: 9, id: me.id, groupid: groupId });
      await c.send({ msgid: 3, id: me.id });
      await eventually(async () => await stateOf(world.sql, me.id) === "offline", 5000);

      const raw = await c.login(me.id, me.password);
      assertEquals(Object.keys(raw), ["msgid", "errno", "id", "name", "friends", "groups"]);
      // Each entry is a string holding one JSON object, ordered by name as Parley lists friends.
      assertEquals(raw.friends, [
        `{"id":${bob.user.id},"name":"${bob.user.name}","state":"online"}`,
        `{"id":${carolUser.id},"name":"${carolUser.name}","state":"offline"}`,
      ]);
      const groups = raw.groups as string[];
      assertEquals(groups.length, 1);
      assertEquals(typeof groups[0], "string");
      const group = JSON.parse(groups[0]);
      assertEquals(Object.keys(group), ["id", "groupname", "groupdesc", "users"]);
      assertEquals([group.id, group.groupname, group.groupdesc], [
        groupId,
        "Course alumni",
        "muduo forever",
      ]);
      assertEquals(group.users, [
        `{"id":${bob.user.id},"name":"${bob.user.name}","state":"online","role":"creator"}`,
        `{"id":${me.id},"name":"${me.name}","state":"online","role":"normal"}`,
      ]);
      await Promise.all([bob.client.close(), carol.close()]);
    });
  });
});

Deno.test("course and WebSocket clients chat both ways, one-to-one and in groups, across two nodes", async () => {
  await withWorld("legacy_chat", async (world) => {
    const { sql } = world;
    const [a, b] = [
      await startNode(world, { nodeId: "ca" }),
      await startNode(world, { nodeId: "cb" }),
    ];
    await withCourse(async (connect) => {
      const ws = await loggedIn(b.server.wsUrl, "web");
      const c = await connect(a.port);
      const me = await registerCourseUser(c, "tcp");

      // msgid 7: the friendship is mutual, and the WebSocket friend hears of it and of presence.
      await c.login(me.id, me.password);
      await c.send({ msgid: 7, id: me.id, friendid: ws.user.id });
      const added = await ws.client.next((f) => f.type === "friend.added");
      assertEquals(added.friend, { id: me.id, name: me.name, online: true });
      await c.send({ msgid: 3, id: me.id });
      assertEquals(
        await ws.client.next((f) => f.type === "presence" && f.online === false),
        { type: "presence", user: me.id, online: false },
      );
      ws.client.skipReceived();
      assertEquals((await c.login(me.id, me.password)).errno, 0);
      assertEquals(
        await ws.client.next((f) => f.type === "presence"),
        { type: "presence", user: me.id, online: true },
      );

      // One-to-one, course to WebSocket: the course's `name` and `time` are the server's to set.
      await c.send({
        msgid: 6,
        id: me.id,
        name: "anyone",
        toid: ws.user.id,
        msg: "hello from the course client",
        time: "1999-01-01 00:00:00",
      });
      const got = msg(await ws.client.next(isMessage("hello from the course client")));
      assertEquals(got.from, { id: me.id, name: me.name });
      assertEquals(got.to, { user: ws.user.id });

      // One-to-one, WebSocket to course.
      const sent = await ws.client.request({
        type: "send",
        to: { user: me.id },
        text: "hello, 你好 from the web",
      });
      const delivered = await c.until((o) => o.msgid === 6);
      assertEquals(Object.keys(delivered), ["msgid", "id", "name", "toid", "msg", "time"]);
      assertEquals(
        { ...delivered, time: "" },
        {
          msgid: 6,
          id: ws.user.id,
          name: ws.user.name,
          toid: me.id,
          msg: "hello, 你好 from the web",
          time: "",
        },
      );
      assertMatch(delivered.time as string, COURSE_TIME);
      const at = (sent.message as { at: string }).at;
      assertEquals(delivered.time, at.slice(0, 10) + " " + at.slice(11, 19));
      // Written to the course socket counts as delivered: nothing waits any more.
      await eventually(async () => await waitingCount(sql, me.id) === 0, 5000, "acknowledged");

      // msgid 8 creates a group with the course user as creator; the WebSocket user joins it.
      await c.send({ msgid: 8, id: me.id, groupname: "Tcp team", groupdesc: "made over TCP" });
      let groupId = 0;
      await eventually(async () => {
        const rows = await sql`select id from groups where created_by = ${me.id}`;
        groupId = rows.length === 1 ? Number(rows[0].id) : 0;
        return groupId > 0;
      });
      const joined = await ws.client.request({ type: "group.join", group: groupId });
      assertEquals(
        (joined.group as { members: { id: number; role: string }[] }).members.map((m) => m.role),
        ["creator", "member"],
      );

      // Group chat, course to WebSocket and back.
      await c.send({ msgid: 10, id: me.id, name: me.name, groupid: groupId, msg: "to the team" });
      const groupMsg = msg(await ws.client.next(isMessage("to the team")));
      assertEquals([groupMsg.from.id, groupMsg.to], [me.id, { group: groupId }]);
      await ws.client.request({ type: "send", to: { group: groupId }, text: "team reply" });
      const fromGroup = await c.until((o) => o.msgid === 10);
      assertEquals(Object.keys(fromGroup), ["msgid", "id", "name", "groupid", "msg", "time"]);
      assertEquals([fromGroup.id, fromGroup.name, fromGroup.groupid, fromGroup.msg], [
        ws.user.id,
        ws.user.name,
        groupId,
        "team reply",
      ]);
      // msgid 9 by a second course client on the other node, then a group message reaches both.
      const c2 = await connect(b.port, "c2");
      const other = await courseLoggedIn(c2, "tcp2");
      await c2.send({ msgid: 9, id: other.id, groupid: groupId });
      await ws.client.next((f) => f.type === "group.member");
      await ws.client.request({ type: "send", to: { group: groupId }, text: "everyone" });
      for (const client of [c, c2]) {
        assertEquals((await client.until((o) => o.msgid === 10)).msg, "everyone");
      }
      // No pushes other than messages ever reach a course client.
      assertEquals(c.objects.filter((o) => ![2, 5, 6, 10].includes(o.msgid as number)), []);
      assertEquals([c.garbage, c2.garbage], [[], []]);
      await ws.client.close();
    });
  });
});

Deno.test("course waiting messages follow the ack, one object per recv, oldest first, never twice", async () => {
  await withWorld("legacy_waiting", async (world) => {
    const { server, port } = await startNode(world);
    await withCourse(async (connect) => {
      const c = await connect(port, "offline-reader");
      const me = await registerCourseUser(c, "away");
      const ws = await loggedIn(server.wsUrl, "sender");
      const group = await ws.client.request({ type: "group.create", name: "Waiting room" });
      const groupId = (group.group as { id: number }).id;
      await c.login(me.id, me.password);
      await c.send({ msgid: 9, id: me.id, groupid: groupId });
      await ws.client.next((f) => f.type === "group.member");
      await c.send({ msgid: 3, id: me.id });
      await eventually(async () => await stateOf(world.sql, me.id) === "offline", 5000);

      const texts = ["first while away", "second while away", "third, to the group"];
      await ws.client.request({ type: "send", to: { user: me.id }, text: texts[0] });
      await ws.client.request({ type: "send", to: { user: me.id }, text: texts[1] });
      await ws.client.request({ type: "send", to: { group: groupId }, text: texts[2] });
      assertEquals(await waitingCount(world.sql, me.id), 3);

      // Same connection: logout kept it open, and a new login works on it.
      const readsBefore = c.reads.length;
      const ack = await c.login(me.id, me.password);
      assertEquals([ack.msgid, ack.errno, "offlinemsg" in ack], [2, 0, false]);
      const after = [await c.next(), await c.next(), await c.next()];
      assertEquals(after.map((o) => [o.msgid, o.msg]), [
        [6, texts[0]],
        [6, texts[1]],
        [10, texts[2]],
      ]);
      // What the course client does with each recv: parse it as one object. Every read since the
      // login must hold exactly one whole object, the ack first.
      const reads = c.reads.slice(readsBefore);
      assertEquals(reads.map(parseRead), [ack, ...after]);
      await eventually(async () => await waitingCount(world.sql, me.id) === 0, 5000, "acked");

      // Log out and in again: nothing is sent twice; the next thing to arrive is new.
      await c.send({ msgid: 3, id: me.id });
      await eventually(async () => await stateOf(world.sql, me.id) === "offline", 5000);
      assertEquals((await c.login(me.id, me.password)).errno, 0);
      await ws.client.request({ type: "send", to: { user: me.id }, text: "marker" });
      assertEquals((await c.next()).msg, "marker");
      await ws.client.close();
    });
  });
});

Deno.test("course requests pipelined in one write, split across writes, or with no NUL all run in order", async () => {
  await withWorld("legacy_stream", async (world) => {
    const { server, port } = await startNode(world);
    await withCourse(async (connect) => {
      const setup = await connect(port, "setup");
      const me = await registerCourseUser(setup, "pipe");
      const ws = await loggedIn(server.wsUrl, "reader");

      const c = await connect(port, "pipeliner");
      const line = (o: CourseObject) => JSON.stringify(o);
      // Login and three messages in one write, the last two with no NUL between them.
      await c.write(
        `${line({ msgid: 1, id: me.id, password: me.password })}\0` +
          `${line({ msgid: 6, id: me.id, toid: ws.user.id, msg: "one" })}\0` +
          `${line({ msgid: 6, id: me.id, toid: ws.user.id, msg: "two" })}` +
          `${line({ msgid: 6, id: me.id, toid: ws.user.id, msg: "three" })}\0`,
      );
      assertEquals((await c.next()).errno, 0);
      for (const text of ["one", "two", "three"]) await ws.client.next(isMessage(text));
      const order = ws.client.frames.filter((f) => f.type === "message").map((f) => msg(f).text);
      assertEquals(order, ["one", "two", "three"]);

      // One request in three writes, cut inside a multi-byte character.
      const bytes = encoder.encode(`${line({ msgid: 6, toid: ws.user.id, msg: "split é ok" })}\0`);
      const cut = bytes.indexOf(0xc3) + 1;
      await c.write(bytes.subarray(0, 5));
      await c.write(bytes.subarray(5, cut));
      await c.write(bytes.subarray(cut));
      await ws.client.next(isMessage("split é ok"));
      await ws.client.close();
    });
  });
});

Deno.test("course malformed objects and requests before login are logged and skipped", async () => {
  await withWorld("legacy_malformed", async (world) => {
    const { server, port } = await startNode(world);
    await withCourse(async (connect) => {
      const c = await connect(port, "sloppy");
      const me = await registerCourseUser(c, "sloppy");
      const ws = await loggedIn(server.wsUrl, "watcher");

      // Before login: only login and register are served.
      await c.send({ msgid: 6, id: me.id, toid: ws.user.id, msg: "too early" });
      await c.send({ msgid: 7, id: me.id, friendid: ws.user.id });
      await server.waitForLog((l) => l.event === "legacy.unauthenticated" && l.msgid === 7);

      // Each kind of malformed input, then a good request on the same connection.
      await c.write("{not json}\0");
      await c.write("[1,2]\0");
      await c.write("plain text\0");
      await c.write(
        new Uint8Array([0x7b, 0x22, 0x6d, 0x22, 0x3a, 0x22, 0xc3, 0x28, 0x22, 0x7d, 0]),
      );
      await c.write(`${JSON.stringify({ msgid: 99 })}\0`);
      await c.write(`${JSON.stringify({ msgid: 6, toid: "x", msg: "bad toid" })}\0`);
      for (
        const reason of ["invalid JSON", "an array", "text outside an object", "invalid UTF-8"]
      ) {
        await server.waitForLog((l) => l.event === "legacy.malformed" && l.reason === reason);
      }
      await server.waitForLog((l) =>
        l.event === "legacy.malformed" && /"msgid"/.test(l.reason as string)
      );
      const ack = await c.login(me.id, me.password);
      assertEquals([ack.msgid, ack.errno], [2, 0]);
      await c.send({ msgid: 6, id: me.id, toid: ws.user.id, msg: "after the mess" });
      await ws.client.next(isMessage("after the mess"));
      // The early requests did nothing.
      assertEquals(ws.client.frames.some(isMessage("too early")), false);
      assertEquals(
        (await world.sql`select 1 from friends where user_id = ${me.id}`).length,
        0,
      );
      // Invalid domain input (empty text, unknown user) is logged, and the connection goes on.
      await c.send({ msgid: 6, id: me.id, toid: ws.user.id, msg: "   " });
      await c.send({ msgid: 6, id: me.id, toid: 987654321, msg: "nobody" });
      await c.send({ msgid: 10, id: me.id, groupid: 987654321, msg: "no group" });
      await server.waitForLog((l) => l.event === "legacy.request_failed" && l.code === "not_found");
      await c.send({ msgid: 6, id: me.id, toid: ws.user.id, msg: "still fine" });
      await ws.client.next(isMessage("still fine"));
      // Nothing ever came back that the course client could not parse.
      assertEquals(c.garbage, []);
      // A password never reaches the log, even from a malformed login.
      assert(!server.text.some((l) => l.includes(me.password)));
      await ws.client.close();
    });
  });
});

Deno.test("course requests act as the logged-in user whatever id they carry", async () => {
  await withWorld("legacy_spoof", async (world) => {
    const { server, port } = await startNode(world);
    await withCourse(async (connect) => {
      const c = await connect(port, "mallory");
      const mallory = await courseLoggedIn(c, "mallory");
      const victim = await loggedIn(server.wsUrl, "victim");
      const target = await loggedIn(server.wsUrl, "target");

      await c.send({
        msgid: 6,
        id: victim.user.id,
        name: victim.user.name,
        toid: target.user.id,
        msg: "it is me, honest",
      });
      const got = msg(await target.client.next(isMessage("it is me, honest")));
      assertEquals(got.from, { id: mallory.id, name: mallory.name });
      await server.waitForLog((l) =>
        l.event === "legacy.id_mismatch" && l.claimed === victim.user.id && l.user === mallory.id
      );

      await c.send({ msgid: 7, id: victim.user.id, friendid: target.user.id });
      const added = await target.client.next((f) => f.type === "friend.added");
      assertEquals((added.friend as { id: number }).id, mallory.id);
      const victimFriends = await world
        .sql`select 1 from friends where user_id = ${victim.user.id}`;
      assertEquals(victimFriends.length, 0);

      // Logout with someone else's id ends this connection's own session only.
      await c.send({ msgid: 3, id: victim.user.id });
      await eventually(async () => await stateOf(world.sql, mallory.id) === "offline", 5000);
      assertEquals(await stateOf(world.sql, victim.user.id), "online");
      await Promise.all([victim.client.close(), target.client.close()]);
    });
  });
});

Deno.test("course requests over the rate limit are dropped and logged; the connection stays", async () => {
  await withWorld("legacy_rate", async (world) => {
    const { server, port } = await startNode(world, {
      env: { RATE_LIMIT_PER_SEC: "2", RATE_LIMIT_BURST: "3" },
    });
    await withCourse(async (connect) => {
      const setup = await connect(port, "setup");
      const me = await registerCourseUser(setup, "fast");
      const ws = await loggedIn(server.wsUrl, "slow");
      const c = await connect(port, "flooder");
      // One write: the login and two messages fit the burst of 3; the next five are dropped.
      const requests = [{ msgid: 1, id: me.id, password: me.password }];
      for (let i = 1; i <= 7; i++) {
        requests.push({ msgid: 6, toid: ws.user.id, msg: `m${i}` } as never);
      }
      await c.write(requests.map((r) => `${JSON.stringify(r)}\0`).join(""));
      assertEquals((await c.next()).errno, 0);
      await server.waitForLog((l) => l.event === "legacy.rate_limited");
      // Once tokens are back, the connection serves again.
      await eventually(async () => {
        await c.send({ msgid: 6, toid: ws.user.id, msg: "later" });
        return await ws.client.next(isMessage("later"), 600).then(() => true, () => false);
      }, 10_000);
      const texts = ws.client.frames.filter((f) => f.type === "message").map((f) => msg(f).text);
      assertEquals(texts.filter((t) => t !== "later"), ["m1", "m2"]);
      await ws.client.close();
    });
  });
});

Deno.test("course connections on SIGTERM: closed, user offline, exit 0", async () => {
  await withWorld("legacy_sigterm", async (world) => {
    const [a, b] = [
      await startNode(world, { nodeId: "ta" }),
      await startNode(world, { nodeId: "tb" }),
    ];
    await withCourse(async (connect) => {
      const c = await connect(a.port, "drained");
      const me = await courseLoggedIn(c, "drained");
      const idle = await connect(a.port, "not-logged-in");
      const friend = await loggedIn(b.server.wsUrl, "friend");
      await friend.client.request({ type: "friend.add", user: me.id });
      assertEquals(await stateOf(world.sql, me.id), "online");

      a.server.kill("SIGTERM");
      await c.closedWithin(10_000);
      await idle.closedWithin(10_000);
      assertEquals((await a.server.exited()).code, 0);
      assertEquals(await stateOf(world.sql, me.id), "offline");
      assertEquals((await world.sql`select 1 from sessions where node_id = 'ta'`).length, 0);
      // The WebSocket friend on the other node sees it go.
      await friend.client.next((f) => f.type === "presence" && f.user === me.id && !f.online);
      // And the user logs in on the surviving node.
      const back = await connect(b.port, "back");
      assertEquals((await back.login(me.id, me.password)).errno, 0);
      await friend.client.close();
    });
  });
});

Deno.test("course sessions on SIGKILL: another node reaps them and the user logs in again", async () => {
  await withWorld("legacy_sigkill", async (world) => {
    const env = { HEARTBEAT_MS: "200", NODE_TTL_MS: "60000" };
    const a = await startNode(world, { nodeId: "ka", env });
    const b = await startNode(world, { nodeId: "kb", env });
    await withCourse(async (connect) => {
      const c = await connect(a.port, "killed");
      const me = await courseLoggedIn(c, "killed");
      const second = await connect(b.port, "second");
      assertEquals(await second.login(me.id, me.password), ALREADY_ONLINE);

      a.server.kill("SIGKILL");
      assertEquals((await a.server.exited()).signal, "SIGKILL");
      await c.closedWithin(5000);
      // The lease has a minute left: only the freed advisory lock can tell, and node B reaps.
      await eventually(async () => await stateOf(world.sql, me.id) === "offline", 5000, "reaped");
      await b.server.waitForLog((l) => l.event === "node.reaped");
      assertEquals((await second.login(me.id, me.password)).errno, 0);
      assertEquals(await stateOf(world.sql, me.id), "online");
    });
  });
});
