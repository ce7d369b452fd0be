/**
 * @module Edits and deletions (PROTOCOL.md v2): message.edit and message.delete, their replies,
 * pushes and errors on two nodes, history's current state, and the catch-up of an offline device
 * in log order.
 */
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { Client, type Frame, loggedIn, resume } from "./support/client.ts";
import { withWorld } from "./support/fixture.ts";

type Msg = {
  id: number;
  seq: number;
  from: { id: number; name: string };
  to: { user: number } | { group: number };
  text: string;
  at: string;
  editedAt?: string;
  deleted?: boolean;
};
const isPush = (type: string) => (f: Frame) => f.type === type && f.ref === undefined;

/** A second socket of a logged-in user (LOGIN_POLICY=multi), on `url`. */
async function device(url: string, token: string): Promise<Client> {
  const client = await Client.connect(url);
  const welcome = await client.request({ type: "login", token });
  assertEquals(welcome.type, "welcome", JSON.stringify(welcome));
  return client;
}

Deno.test("message.edit and message.delete: the sender's change is a new event, pushed to every device but the asking one", async () => {
  await withWorld("edits_direct", async ({ start, sql }) => {
    const env = { LOGIN_POLICY: "multi" };
    const [a, b] = [await start({ nodeId: "ea", env }), await start({ nodeId: "eb", env })];
    const alice = await loggedIn(a.wsUrl, "alice");
    const alice2 = await device(b.wsUrl, alice.token);
    const bob = await loggedIn(b.wsUrl, "bob");
    const carol = await loggedIn(a.wsUrl, "carol");

    const sent = (await alice.client.request({
      type: "send",
      to: { user: bob.user.id },
      text: "See you at 7",
    })).message as Msg;
    assertEquals(sent.seq, 1);
    await bob.client.next(isPush("message"));

    const edited = await alice.client.request({
      type: "message.edit",
      id: sent.id,
      text: "  See you at 8  ",
    });
    assertEquals(edited.type, "edited");
    assertEquals(edited.seq, 2);
    const message = edited.message as Msg;
    const { editedAt, ...rest } = message;
    assertEquals(rest, { ...sent, text: "See you at 8" });
    assert(editedAt && editedAt >= sent.at, "editedAt is set");
    // One edit, one editedAt: the same in the pushes and in history.
    for (const client of [bob.client, alice2]) {
      assertEquals(await client.next(isPush("message.edited")), {
        type: "message.edited",
        message,
        seq: 2,
      });
    }
    const history = await bob.client.request({ type: "history", with: { user: alice.user.id } });
    assertEquals(history.messages, [message]);
    // An edit to the same text is still an event.
    const same = await alice.client.request({
      type: "message.edit",
      id: sent.id,
      text: "See you at 8",
    });
    assertEquals(same.seq, 3);
    await bob.client.next((f) => isPush("message.edited")(f) && f.seq === 3);

    // Errors change nothing.
    const errors: [Client, Frame, string][] = [
      [bob.client, { type: "message.edit", id: sent.id, text: "mine now" }, "forbidden"],
      [bob.client, { type: "message.delete", id: sent.id }, "forbidden"],
      [carol.client, { type: "message.edit", id: sent.id, text: "x" }, "not_found"],
      [carol.client, { type: "message.delete", id: sent.id }, "not_found"],
      [alice.client, { type: "message.edit", id: 987654, text: "x" }, "not_found"],
      [alice.client, { type: "message.delete", id: 987654 }, "not_found"],
      [alice.client, { type: "message.edit", id: sent.id }, "bad_frame"],
      [alice.client, { type: "message.edit", text: "x" }, "bad_frame"],
      [alice.client, { type: "message.delete", id: "1" }, "bad_frame"],
    ];
    for (const [client, frame, code] of errors) {
      assertEquals((await client.request(frame)).code, code, JSON.stringify(frame));
    }
    for (const text of ["", "   ", "x".repeat(4001), "nul \u0000"]) {
      const r = await alice.client.request({ type: "message.edit", id: sent.id, text });
      assertEquals(r.code, "bad_frame");
      assertMatch(r.message as string, /"text"/);
    }
    const [row] = await sql<{ body: string; lastSeq: number }[]>`
      select m.body, c.last_seq as "lastSeq" from messages m
        join conversations c on c.id = m.conversation_id where m.id = ${sent.id}`;
    assertEquals(row, { body: "See you at 8", lastSeq: 3 });

    // Deleting: the reply and the pushes name the conversation as each side names it.
    const deleted = await alice.client.request({ type: "message.delete", id: sent.id });
    assertEquals(deleted, {
      type: "deleted",
      ref: deleted.ref,
      with: { user: bob.user.id },
      id: sent.id,
      seq: 4,
    });
    assertEquals(await bob.client.next(isPush("message.deleted")), {
      type: "message.deleted",
      with: { user: alice.user.id },
      id: sent.id,
      seq: 4,
    });
    assertEquals(await alice2.next(isPush("message.deleted")), {
      type: "message.deleted",
      with: { user: bob.user.id },
      id: sent.id,
      seq: 4,
    });
    // A deleted message stays in history in its deleted form, and cannot be changed again.
    const after = await alice.client.request({ type: "history", with: { user: bob.user.id } });
    assertEquals(after.messages, [{ ...sent, text: "", deleted: true }]);
    for (
      const frame of [
        { type: "message.edit", id: sent.id, text: "back" },
        { type: "message.delete", id: sent.id },
      ]
    ) {
      assertEquals((await alice.client.request(frame)).code, "forbidden", frame.type);
    }
    // The asking device got replies only.
    await alice.client.request({ type: "ping" });
    assertEquals(alice.client.frames.filter(isPush("message.edited")), []);
    assertEquals(alice.client.frames.filter(isPush("message.deleted")), []);
    await Promise.all([alice.client, alice2, bob.client, carol.client].map((c) => c.close()));
  });
});

Deno.test("message.edit in a group reaches every member; a former member can no longer see the message", async () => {
  await withWorld("edits_group", async ({ start }) => {
    const [a, b] = [await start({ nodeId: "ga" }), await start({ nodeId: "gb" })];
    const carol = await loggedIn(a.wsUrl, "carol");
    const dave = await loggedIn(b.wsUrl, "dave");
    const erin = await loggedIn(b.wsUrl, "erin");
    const group = (await carol.client.request({ type: "group.create", name: "g" })).group as {
      id: number;
    };
    await dave.client.request({ type: "group.join", group: group.id });
    const own = (await dave.client.request({
      type: "send",
      to: { group: group.id },
      text: "typo",
    })).message as Msg;
    const edited = await dave.client.request({ type: "message.edit", id: own.id, text: "fixed" });
    assertEquals(edited.type, "edited");
    assertEquals(await carol.client.next(isPush("message.edited")), {
      type: "message.edited",
      message: edited.message,
      seq: edited.seq,
    });
    // Not a member: the message is not visible.
    assertEquals(
      (await erin.client.request({ type: "message.delete", id: own.id })).code,
      "not_found",
    );
    const deleted = await dave.client.request({ type: "message.delete", id: own.id });
    assertEquals([deleted.with, deleted.seq], [{ group: group.id }, (edited.seq as number) + 1]);
    assertEquals(await carol.client.next(isPush("message.deleted")), {
      type: "message.deleted",
      with: { group: group.id },
      id: own.id,
      seq: deleted.seq,
    });
    const second = (await dave.client.request({
      type: "send",
      to: { group: group.id },
      text: "bye",
    })).message as Msg;
    await dave.client.request({ type: "group.leave", group: group.id });
    assertEquals(
      (await dave.client.request({ type: "message.edit", id: second.id, text: "x" })).code,
      "not_found",
    );
    await Promise.all([carol.client, dave.client, erin.client].map((c) => c.close()));
  });
});

Deno.test("edits and deletions are caught up by an offline device in log order, with each message's current state", async () => {
  await withWorld("edits_catch_up", async ({ start }) => {
    const [a, b] = [await start({ nodeId: "ca" }), await start({ nodeId: "cb" })];
    const alice = await loggedIn(a.wsUrl, "alice");
    const bob = await loggedIn(b.wsUrl, "bob");
    await bob.client.close();

    const send = async (
      text: string,
    ) => ((await alice.client.request({ type: "send", to: { user: bob.user.id }, text }))
      .message as Msg);
    const first = await send("first");
    const second = await send("second");
    const edit = await alice.client.request({ type: "message.edit", id: first.id, text: "1st" });
    const del = await alice.client.request({ type: "message.delete", id: second.id });
    const third = await send("third");
    assertEquals([first.seq, second.seq, edit.seq, del.seq, third.seq], [1, 2, 3, 4, 5]);

    const { client, welcome } = await resume(b.wsUrl, bob.token);
    const conversation = (welcome.conversations as {
      with: unknown;
      lastSeq: number;
      unread: number;
    }[]).find((c) => JSON.stringify(c.with) === JSON.stringify({ user: alice.user.id }));
    // Unread: the messages beyond readSeq that are not deleted; edits are not messages.
    assertEquals([conversation?.lastSeq, conversation?.unread], [5, 2]);
    await client.next((f) => f.type === "message" && (f.message as Msg).id === third.id);
    const events = client.frames.filter((f) =>
      ["message", "message.edited", "message.deleted"].includes(f.type)
    );
    const edited = edit.message as Msg;
    assertEquals(events, [
      { type: "message", message: edited },
      { type: "message", message: { ...second, text: "", deleted: true } },
      { type: "message.edited", message: edited, seq: 3 },
      { type: "message.deleted", with: { user: alice.user.id }, id: second.id, seq: 4 },
      { type: "message", message: third },
    ]);

    // Acknowledged up to the last event: nothing comes again.
    client.send({ type: "ack", with: { user: alice.user.id }, seq: 5 });
    await client.request({ type: "ping" });
    await client.close();
    const { client: again } = await resume(a.wsUrl, bob.token);
    await again.request({ type: "ping" });
    assertEquals(
      again.frames.filter((f) => f.type.startsWith("message")),
      [],
    );
    await Promise.all([alice.client.close(), again.close()]);
  });
});
