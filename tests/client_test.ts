/**
 * @module The terminal client as a real process (`src/client/main.ts` with the task's permissions),
 * commands written to its stdin, against a real server; a second user on a protocol client checks
 * what reaches the other side.
 */
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { Client, eventually, type Frame, loggedIn, registerUser } from "./support/client.ts";
import type { Sql } from "./support/context.ts";
import { undelivered, withWorld } from "./support/fixture.ts";

const CLIENT = new URL("../src/client/main.ts", import.meta.url).pathname;
const ROOT = new URL("../", import.meta.url).pathname;
const STEP_MS = 10_000;
const TIME = String.raw`\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\]`;
/** The whole help, whatever the number of commands: its last line is loginout's. */
const HELP_DONE = /commands:\n( {2}.*\n)* {2}loginout .*\n/;

/** The client process: lines typed into its stdin, its stdout kept as one growing text. */
class ClientProcess {
  output = "";
  #child: Deno.ChildProcess;
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #readers: Promise<void>;
  #stdinClosed = false;

  constructor(url: string, args: string[] = ["--url", url]) {
    this.#child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-net", "--allow-env", CLIENT, ...args],
      cwd: ROOT,
      env: { NO_COLOR: "1" },
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#stdin = this.#child.stdin.getWriter();
    this.#readers = Promise.all([
      this.#read(this.#child.stdout),
      this.#read(this.#child.stderr),
    ]).then(() => {});
  }

  async #read(stream: ReadableStream<Uint8Array>) {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) this.output += text;
  }

  async type(...lines: string[]) {
    await this.#stdin.write(new TextEncoder().encode(lines.map((l) => `${l}\n`).join("")));
  }

  /** The first match of `pattern` in the output from `from` on, once it has been printed. */
  async waitFor(pattern: RegExp, from = 0): Promise<RegExpMatchArray & { index: number }> {
    let match: RegExpMatchArray | null = null;
    await eventually(
      () => (match = this.output.slice(from).match(pattern)) !== null,
      STEP_MS,
      `${pattern} in the client's output:\n${this.output}`,
    );
    const found = match! as RegExpMatchArray & { index: number };
    found.index += from;
    return found;
  }

  /** Closes stdin (the end of input) and waits for the process to exit. */
  async endInput(): Promise<Deno.CommandStatus> {
    await this.#closeStdin();
    return await this.exited();
  }

  async exited(ms = STEP_MS): Promise<Deno.CommandStatus> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), ms));
    const status = await Promise.race([this.#child.status, late]);
    clearTimeout(timer);
    if (status === null) {
      await this.kill();
      throw new Error(`The client did not exit within ${ms} ms; output:\n${this.output}`);
    }
    await this.#closeStdin();
    await this.#readers;
    return status;
  }

  async #closeStdin() {
    if (this.#stdinClosed) return;
    this.#stdinClosed = true;
    await this.#stdin.close().catch(() => {});
  }

  async kill() {
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // Gone already.
    }
    await this.#child.status;
    await this.#closeStdin();
    await this.#readers;
  }
}

/** Runs `fn` with a client process that is ended afterwards, whatever happened. */
async function withClientProcess(url: string, fn: (client: ClientProcess) => Promise<void>) {
  const client = new ClientProcess(url);
  try {
    await fn(client);
  } finally {
    await client.kill();
  }
}

function waitingCount(sql: Sql, userId: number): Promise<number> {
  return undelivered(sql, userId);
}

const isMessage = (text: string) => (f: Frame) =>
  f.type === "message" && (f.message as { text: string }).text === text;

Deno.test("terminal client registers and logs in from the menu, chats, befriends, runs groups and exits at the end of input", async () => {
  await withWorld("client_chat", async ({ start, sql }) => {
    const server = await start();
    const bob = await loggedIn(server.wsUrl, "bob");
    try {
      await withClientProcess(server.wsUrl, async (client) => {
        const name = `alice${crypto.randomUUID().slice(0, 8)}`;
        const password = "correct horse battery";
        await client.waitFor(/1\. login\n2\. register\n3\. quit/);

        client.type("2", name, password);
        const registered = await client.waitFor(/registered (\S+): your id is (\d+)/);
        assertEquals(registered[1], name);
        const aliceId = Number(registered[2]);

        client.type("1", name, password);
        const overview = await client.waitFor(new RegExp(`current user: ${name} \\(${aliceId}\\)`));
        const help = await client.waitFor(HELP_DONE, overview.index);

        // addfriend: both sides are friends; Bob is told.
        client.type(`addfriend:${bob.user.id}`);
        await client.waitFor(
          new RegExp(`${bob.user.name} \\(${bob.user.id}\\) is now your friend \\(online\\)`),
          help.index,
        );
        const added = await bob.client.next((f) => f.type === "friend.added");
        assertEquals((added.friend as { id: number }).id, aliceId);

        // chat: the text keeps its colons.
        client.type(`chat:${bob.user.id}:Hello Bob: how are you?`);
        const toBob = await bob.client.next(isMessage("Hello Bob: how are you?"));
        assertEquals((toBob.message as { from: unknown }).from, { id: aliceId, name });
        await client.waitFor(new RegExp(`sent to ${bob.user.name} \\(${bob.user.id}\\)`));

        // A message to Alice prints as it arrives, with time and sender, and is acked.
        await bob.client.request({ type: "send", to: { user: aliceId }, text: "Fine, thanks" });
        await client.waitFor(
          new RegExp(`${TIME} ${bob.user.name} \\(${bob.user.id}\\): Fine, thanks`),
        );
        await eventually(async () => await waitingCount(sql, aliceId) === 0, STEP_MS, "the ack");

        // creategroup, a member joins, groupchat both ways.
        client.type("creategroup:Readers:Books we like");
        const created = await client.waitFor(/created group (\d+) "Readers"/);
        const groupId = Number(created[1]);
        const joined = await bob.client.request({ type: "group.join", group: groupId });
        assertEquals(joined.type, "group.joined");
        await client.waitFor(new RegExp(`\\* ${bob.user.name} \\(${bob.user.id}\\) joined group`));
        client.type(`groupchat:${groupId}:Hello readers`);
        const inGroup = await bob.client.next(isMessage("Hello readers"));
        assertEquals((inGroup.message as { to: unknown }).to, { group: groupId });
        await bob.client.request({ type: "send", to: { group: groupId }, text: "Hi all" });
        await client.waitFor(
          new RegExp(
            `\\[group ${groupId}\\] ${TIME} ${bob.user.name} \\(${bob.user.id}\\): Hi all`,
          ),
        );
        await eventually(async () => await waitingCount(sql, aliceId) === 0, STEP_MS, "the ack");

        // addgroup as well: Bob's group, joined from the client.
        const bobsGroup = await bob.client.request({ type: "group.create", name: "Chess" });
        const chessId = (bobsGroup.group as { id: number }).id;
        client.type(`addgroup:${chessId}`);
        await client.waitFor(new RegExp(`joined group ${chessId}:\\n${chessId} Chess`));
        const member = await bob.client.next((f) => f.type === "group.member");
        assertEquals((member.member as { id: number }).id, aliceId);

        // history shows the conversation, oldest first.
        client.type(`history:${bob.user.id}`);
        const history = await client.waitFor(/the last 2 messages with .*\n.*\n.*\n/);
        assertMatch(history[0], /Hello Bob: how are you\?\n.*Fine, thanks/);

        // Bad commands print the help line of that command; unknown ones say so.
        let mark = client.output.length;
        client.type("chat:bob:hi");
        await client.waitFor(
          /usage: chat:<userid>:<text> {2}\(send <text> to user <userid>\)/,
          mark,
        );
        client.type("addgroup:");
        await client.waitFor(/usage: addgroup:<groupid>/, mark);
        client.type("creategroup");
        await client.waitFor(/usage: creategroup:<name>:<description>/, mark);
        client.type("frobnicate");
        await client.waitFor(/Unknown command "frobnicate": type help/, mark);
        mark = client.output.length;
        client.type(`chat:999999:anyone there?`);
        await client.waitFor(/error: No user has id 999999/, mark);

        // The end of input: the socket closes (Bob sees Alice go offline) and the exit code is 0.
        bob.client.skipReceived();
        const status = await client.endInput();
        assertEquals(status.code, 0, client.output);
        const offline = await bob.client.next((f) => f.type === "presence");
        assertEquals([offline.user, offline.online], [aliceId, false]);
      });
    } finally {
      await bob.client.close();
    }
  });
});

Deno.test("terminal client prints the overview, then waiting messages, then help; loginout and quit", async () => {
  await withWorld("client_waiting", async ({ start, sql }) => {
    const server = await start();
    const bob = await loggedIn(server.wsUrl, "bob");
    const setup = await Client.connect(server.wsUrl);
    const alice = await registerUser(setup, "alice");
    try {
      // Alice joins Bob's group and befriends him, then goes offline; Bob writes meanwhile.
      assertEquals((await setup.request({ type: "login", ...alice })).type, "welcome");
      await setup.request({ type: "friend.add", user: bob.user.id });
      const group = await bob.client.request({ type: "group.create", name: "Night owls" });
      const groupId = (group.group as { id: number }).id;
      await setup.request({ type: "group.join", group: groupId });
      await setup.close();
      await bob.client.next((f) => f.type === "presence" && f.online === false);
      for (const text of ["first while away", "second while away"]) {
        await bob.client.request({ type: "send", to: { user: alice.id }, text });
      }
      await bob.client.request({ type: "send", to: { group: groupId }, text: "group while away" });
      assertEquals(await waitingCount(sql, alice.id), 3);

      await withClientProcess(server.wsUrl, async (client) => {
        client.type("1", alice.name, alice.password);
        await client.waitFor(HELP_DONE);
        const out = client.output;
        const order = [
          `current user: ${alice.name} (${alice.id})`,
          "friends",
          `${bob.user.id} ${bob.user.name} online`,
          "groups",
          `${groupId} Night owls`,
          `${bob.user.id} ${bob.user.name} creator online`,
          `${alice.id} ${alice.name} member online`,
          "waiting messages: 3",
          `${bob.user.name} (${bob.user.id}): first while away`,
          `${bob.user.name} (${bob.user.id}): second while away`,
          `[group ${groupId}]`,
          "group while away",
          "commands:",
        ].map((text) => [text, out.indexOf(text)] as const);
        for (const [text, at] of order) assert(at >= 0, `"${text}" is missing from:\n${out}`);
        // Counted by the server from alice's cursors (the same on every device), in the overview.
        for (
          const text of [
            `unread: 2 from ${bob.user.name} (${bob.user.id})`,
            `unread: 1 in group ${groupId} "Night owls"`,
          ]
        ) {
          const at = out.indexOf(text);
          assert(at > out.indexOf("groups") && at < out.indexOf("waiting messages"), out);
        }
        for (let i = 1; i < order.length; i++) {
          assert(order[i][1] > order[i - 1][1], `"${order[i][0]}" comes too early in:\n${out}`);
        }
        await eventually(async () => await waitingCount(sql, alice.id) === 0, STEP_MS, "acks");
        // What it printed it acknowledged by cursor and marked read: nothing unread any more.
        await eventually(
          async () => {
            const [row] = await sql<{ n: number }[]>`
            select count(*)::int as n from user_cursors
             where user_id = ${alice.id} and read_seq > 0`;
            return row.n === 2;
          },
          STEP_MS,
          "reads",
        );
        const [device] = await sql<{ n: number }[]>`
          select count(*)::int as n from device_cursors where seq > 0`;
        assertEquals(device.n, 2, "one cursor per conversation of the terminal's device");

        // loginout goes back to the menu; 3 quits with 0 while stdin is still open.
        bob.client.skipReceived();
        const mark = client.output.length;
        client.type("loginout");
        await client.waitFor(/logged out\n=+\n1\. login/, mark);
        const offline = await bob.client.next((f) => f.type === "presence");
        assertEquals([offline.user, offline.online], [alice.id, false]);
        client.type("3");
        assertEquals((await client.exited()).code, 0, client.output);
      });
    } finally {
      await bob.client.close();
    }
  });
});

Deno.test("terminal client finds people, unfriends, blocks, unblocks, leaves groups, and prints message ids and typing", async () => {
  await withWorld("client_people", async ({ start }) => {
    const server = await start();
    const tag = crypto.randomUUID().slice(0, 6);
    const bob = await loggedIn(server.wsUrl, `bob${tag}`);
    const setup = await Client.connect(server.wsUrl);
    const alice = await registerUser(setup, `alice${tag}`);
    await setup.close();
    try {
      await withClientProcess(server.wsUrl, async (client) => {
        client.type("1", alice.name, alice.password);
        const help = await client.waitFor(HELP_DONE);
        for (
          const usage of [
            "find:<prefix>",
            "unfriend:<userid>",
            "block:<userid>",
            "unblock:<userid>",
            "leavegroup:<groupid>",
          ]
        ) {
          assert(help[0].includes(`  ${usage} `), `help lists ${usage}:\n${help[0]}`);
        }

        // find: by a prefix in any case; the user itself is never listed.
        client.type(`find:BOB${tag}`);
        await client.waitFor(
          new RegExp(
            `people whose name starts with "BOB${tag}".*\\n {2}${bob.user.id} ${bob.user.name}\\n`,
          ),
        );
        let mark = client.output.length;
        client.type(`find:alice${tag}`);
        await client.waitFor(new RegExp(`no one's name starts with "alice${tag}"`), mark);
        client.type("find:");
        await client.waitFor(/usage: find:<prefix>/, mark);

        // Messages print with their id; typing shows once.
        client.type(`addfriend:${bob.user.id}`);
        await client.waitFor(
          new RegExp(`${bob.user.name} \\(${bob.user.id}\\) is now your friend`),
        );
        bob.client.send({ type: "typing", to: { user: alice.id } });
        await client.waitFor(new RegExp(`\\* ${bob.user.name} \\(${bob.user.id}\\) is typing…`));
        const sent = await bob.client.request({ type: "send", to: { user: alice.id }, text: "Hi" });
        const id = (sent.message as { id: number }).id;
        await client.waitFor(
          new RegExp(`#${id} ${TIME} ${bob.user.name} \\(${bob.user.id}\\): Hi`),
        );

        // unfriend: both sides lose the friendship; Bob is told.
        mark = client.output.length;
        client.type(`unfriend:${bob.user.id}`);
        await client.waitFor(
          new RegExp(`${bob.user.name} \\(${bob.user.id}\\) is no longer your friend`),
          mark,
        );
        assertEquals(await bob.client.next((f) => f.type === "friend.removed"), {
          type: "friend.removed",
          user: alice.id,
        });

        // block: Bob's messages are refused until unblock.
        client.type(`block:${bob.user.id}`);
        await client.waitFor(/blocked .*: no messages or friend requests either way/, mark);
        const refused = await bob.client.request({
          type: "send",
          to: { user: alice.id },
          text: "x",
        });
        assertEquals(refused.code, "forbidden");
        client.type(`unblock:${bob.user.id}`);
        await client.waitFor(/unblocked /, mark);
        const again = await bob.client.request({
          type: "send",
          to: { user: alice.id },
          text: "Back",
        });
        assertEquals(again.type, "sent");
        await client.waitFor(/: Back\n/, mark);

        // leavegroup: Bob's group, joined then left; Bob is told.
        const group = await bob.client.request({ type: "group.create", name: "Chess" });
        const groupId = (group.group as { id: number }).id;
        client.type(`addgroup:${groupId}`);
        await client.waitFor(new RegExp(`joined group ${groupId}:`), mark);
        client.type(`leavegroup:${groupId}`);
        await client.waitFor(
          new RegExp(`left group ${groupId} "Chess"; addgroup:${groupId}`),
          mark,
        );
        const left = await bob.client.next((f) => f.type === "group.member.left");
        assertEquals([left.group, left.user], [groupId, alice.id]);
        client.type(`leavegroup:${groupId}`);
        await client.waitFor(new RegExp(`error: You are not a member of group ${groupId}`), mark);
        client.type("block:x");
        await client.waitFor(/usage: block:<userid>/, mark);

        assertEquals((await client.endInput()).code, 0, client.output);
      });
    } finally {
      await bob.client.close();
    }
  });
});

Deno.test("terminal client edits and deletes its messages and prints others' edits and deletions", async () => {
  await withWorld("client_edits", async ({ start }) => {
    const server = await start();
    const bob = await loggedIn(server.wsUrl, "bob");
    const setup = await Client.connect(server.wsUrl);
    const alice = await registerUser(setup, "alice");
    await setup.close();
    try {
      await withClientProcess(server.wsUrl, async (client) => {
        client.type("1", alice.name, alice.password);
        const help = await client.waitFor(HELP_DONE);
        for (const usage of ["edit:<messageid>:<text>", "delete:<messageid>"]) {
          assert(help[0].includes(`  ${usage} `), `help lists ${usage}:\n${help[0]}`);
        }
        client.type(`chat:${bob.user.id}:See you at 7`);
        const sent = await client.waitFor(/sent to .*, message (\d+)/);
        const id = Number(sent[1]);
        await bob.client.next(isMessage("See you at 7"));

        client.type(`edit:${id}:See you at 8: the usual place`);
        await client.waitFor(
          new RegExp(
            `edited message ${id}:\\n#${id} ${TIME} ${alice.name} \\(${alice.id}\\): ` +
              `See you at 8: the usual place \\(edited\\)`,
          ),
        );
        const edited = await bob.client.next((f) => f.type === "message.edited");
        assertEquals((edited.message as { text: string }).text, "See you at 8: the usual place");
        client.type(`delete:${id}`);
        await client.waitFor(new RegExp(`deleted message ${id}\\n`));
        const deleted = await bob.client.next((f) => f.type === "message.deleted");
        assertEquals([deleted.id, deleted.with], [id, { user: alice.id }]);

        // Bob's edit and deletion print as they come.
        const his = await bob.client.request({ type: "send", to: { user: alice.id }, text: "Ok" });
        const hisId = (his.message as { id: number }).id;
        await client.waitFor(new RegExp(`#${hisId} ${TIME} ${bob.user.name} .*: Ok\\n`));
        await bob.client.request({ type: "message.edit", id: hisId, text: "Ok, 8 it is" });
        await client.waitFor(
          new RegExp(`\\* message ${hisId} was edited:\\n#${hisId} .*: Ok, 8 it is \\(edited\\)`),
        );
        let mark = client.output.length;
        client.type(`edit:${hisId}:mine now`);
        await client.waitFor(new RegExp(`error: Message ${hisId} is not yours`), mark);
        await bob.client.request({ type: "message.delete", id: hisId });
        await client.waitFor(new RegExp(`\\* message ${hisId} was deleted`));
        mark = client.output.length;
        client.type("edit:abc:x");
        await client.waitFor(/usage: edit:<messageid>:<text>/, mark);
        client.type("delete:");
        await client.waitFor(/usage: delete:<messageid>/, mark);
        assertEquals((await client.endInput()).code, 0, client.output);
      });
    } finally {
      await bob.client.close();
    }
  });
});
