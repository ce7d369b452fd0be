/**
 * @module The web client end to end: real server processes, Debian's Chromium driven headless by
 * playwright-core, and two people in two browser contexts (a desktop and a phone-sized screen)
 * doing what people do. Screenshots of the main screens go to tests/.artifacts/web/.
 */
import { type Browser, chromium, type ConsoleMessage, type Page } from "playwright-core";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { Client, eventually } from "./support/client.ts";
import type { Sql } from "./support/context.ts";
import { undelivered, withWorld } from "./support/fixture.ts";

const CHROMIUM = Deno.env.get("CHROMIUM_PATH") || "/usr/bin/chromium";
const ARTIFACTS = new URL("./.artifacts/web/", import.meta.url);
const DESKTOP = { width: 1100, height: 720 };
const PHONE = { width: 390, height: 780 };
const STEP_MS = 10_000;

async function launch(): Promise<Browser> {
  try {
    await Deno.stat(CHROMIUM);
  } catch {
    throw new Error(
      `The browser tests need Chromium, and there is none at "${CHROMIUM}": install it ` +
        "(apt-get install chromium) or set CHROMIUM_PATH to a Chromium executable",
    );
  }
  return await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** Runs `fn` with a browser that is closed afterwards, whatever happened. */
async function withBrowser(fn: (browser: Browser) => Promise<void>): Promise<void> {
  const browser = await launch();
  try {
    await fn(browser);
  } finally {
    await browser.close();
  }
}

/** A page whose script errors and CSP violations are kept, to be asserted absent at the end. */
async function openPage(
  browser: Browser,
  viewport: { width: number; height: number },
  problems: string[],
): Promise<Page> {
  const context = await browser.newContext({ viewport });
  context.setDefaultTimeout(STEP_MS);
  const page = await context.newPage();
  watch(page, problems);
  return page;
}

function watch(page: Page, problems: string[]) {
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message: ConsoleMessage) => {
    // A refused WebSocket while a server restarts is expected; a CSP refusal never is.
    if (message.type() === "error" && !/WebSocket connection to .* failed/.test(message.text())) {
      problems.push(`console: ${message.text()}`);
    }
  });
}

async function screenshot(page: Page, name: string) {
  await Deno.mkdir(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: new URL(`${name}.png`, ARTIFACTS).pathname });
}

const unique = (prefix: string) => `${prefix}${crypto.randomUUID().slice(0, 6)}`;
const PASSWORD = "correct horse battery";

/** Registers through the form (which logs in too) and returns the id the page shows. */
async function register(page: Page, name: string): Promise<number> {
  await page.getByLabel("Name", { exact: true }).fill(name);
  await page.getByLabel("Password", { exact: true }).fill(PASSWORD);
  await page.getByRole("button", { name: "Register" }).click();
  const me = page.locator("#me");
  await me.getByText(name, { exact: true }).waitFor();
  return Number(await me.locator("strong").nth(1).textContent());
}

const entry = (page: Page, key: string) => page.locator(`#sidebar li[data-key="${key}"]`);

/** Waits until the side list shows `userId` with the word `online` or `offline`. */
async function presence(page: Page, userId: number, word: "online" | "offline") {
  await entry(page, `user:${userId}`).locator(".presence", { hasText: new RegExp(`^${word}$`) })
    .waitFor();
  assertEquals(
    await entry(page, `user:${userId}`).getAttribute("data-online"),
    String(word === "online"),
  );
}

const messageItems = (page: Page, text: string) =>
  page.locator("#messages li.message", { hasText: text });

function waitingCount(sql: Sql, userId: number) {
  return undelivered(sql, userId);
}

Deno.test("web client: register, befriend, chat both ways, presence, reload and offline messages", async () => {
  await withWorld("web_chat", async ({ start, sql }) => {
    const server = await start();
    await withBrowser(async (browser) => {
      const problems: string[] = [];
      const alice = { name: unique("alice"), id: 0 };
      const bob = { name: unique("bob"), id: 0 };
      const a = await openPage(browser, DESKTOP, problems);
      const b = await openPage(browser, PHONE, problems);

      const response = await a.goto(server.url);
      assertEquals(response?.headers()["content-type"], "text/html; charset=utf-8");
      assertMatch(response?.headers()["content-security-policy"] ?? "", /default-src 'self'/);
      await a.getByRole("button", { name: "Log in" }).waitFor();
      await screenshot(a, "01-sign-in-desktop");
      await b.goto(server.url);

      alice.id = await register(a, alice.name);
      bob.id = await register(b, bob.name);
      assert(alice.id > 0 && bob.id > 0 && alice.id !== bob.id, "the pages show both ids");

      // Alice adds Bob by id; both lists show the other, online, without a reload.
      await a.getByLabel("Friend's id or name").fill(String(bob.id));
      await a.getByRole("button", { name: "Add friend" }).click();
      await presence(a, bob.id, "online");
      await presence(b, alice.id, "online");
      await b.getByText(`${alice.name} added you as a friend`).waitFor();

      // Alice writes (Enter sends); her message turns from pending to sent.
      await entry(a, `user:${bob.id}`).locator("button.contact").click();
      await a.getByLabel("Message", { exact: true }).fill("Hello Bob, how are you?");
      await a.getByLabel("Message", { exact: true }).press("Enter");
      await messageItems(a, "Hello Bob").locator(".state", { hasText: /^sent$/ }).waitFor();

      // Bob sees an unread count, opens the conversation, and the message is acked once shown.
      await entry(b, `user:${alice.id}`).and(b.locator('[data-unread="1"]')).waitFor();
      await screenshot(b, "02-list-phone");
      await entry(b, `user:${alice.id}`).locator("button.contact").click();
      await messageItems(b, "Hello Bob, how are you?").locator(".sender", { hasText: alice.name })
        .waitFor();
      await eventually(async () => await waitingCount(sql, bob.id) === 0, STEP_MS, "Bob's ack");
      assertEquals(await entry(b, `user:${alice.id}`).getAttribute("data-unread"), "0");

      // Bob answers with the Send button; Alice's open conversation shows it live.
      await b.getByLabel("Message", { exact: true }).fill("Fine, thanks! And you?");
      await b.getByRole("button", { name: "Send" }).click();
      await messageItems(a, "Fine, thanks! And you?").waitFor();
      // Sent, and soon seen: Alice has the conversation open.
      await messageItems(b, "Fine, thanks!").locator(".state", { hasText: /^(sent|seen)$/ })
        .waitFor();
      await eventually(async () => await waitingCount(sql, alice.id) === 0, STEP_MS, "Alice's ack");
      await screenshot(a, "03-chat-desktop");
      await screenshot(b, "04-chat-phone");

      // Bob closes his page: Alice sees him go offline.
      await b.close();
      await presence(a, bob.id, "offline");
      await a.locator("#conversation-detail", { hasText: "offline" }).waitFor();
      await screenshot(a, "05-friend-offline-desktop");

      // Alice writes while Bob is away; the server keeps it for him.
      await a.getByLabel("Message", { exact: true }).fill("Are you still there?");
      await a.getByLabel("Message", { exact: true }).press("Enter");
      await messageItems(a, "Are you still there?").locator(".state", { hasText: /^sent$/ })
        .waitFor();
      assertEquals(await waitingCount(sql, bob.id), 1);

      // Bob comes back in the same browser: the kept token logs him in without the password.
      const b2 = await b.context().newPage();
      watch(b2, problems);
      await b2.goto(server.url);
      await b2.locator("#me").getByText(bob.name, { exact: true }).waitFor();
      assertEquals(await b2.getByLabel("Password", { exact: true }).inputValue(), "");
      await presence(a, bob.id, "online");
      await entry(b2, `user:${alice.id}`).and(b2.locator('[data-unread="1"]')).waitFor();
      await entry(b2, `user:${alice.id}`).locator("button.contact").click();
      await messageItems(b2, "Are you still there?").waitFor();
      await eventually(async () => await waitingCount(sql, bob.id) === 0, STEP_MS, "Bob's ack");

      // Alice reloads: still logged in; the history comes back in order, each message once.
      await a.reload();
      await a.locator("#me").getByText(alice.name, { exact: true }).waitFor();
      await presence(a, bob.id, "online");
      await entry(a, `user:${bob.id}`).locator("button.contact").click();
      await messageItems(a, "Are you still there?").waitFor();
      const texts = await a.locator("#messages li.message .text").allTextContents();
      assertEquals(texts, [
        "Hello Bob, how are you?",
        "Fine, thanks! And you?",
        "Are you still there?",
      ]);

      assertEquals(problems, []);
    });
  });
});

Deno.test("web client: unread counts from the server on every device, read on one clears the other, seen under the last own message read", async () => {
  await withWorld("web_unread", async ({ start }) => {
    const server = await start({ env: { LOGIN_POLICY: "multi" } });
    await withBrowser(async (browser) => {
      const problems: string[] = [];
      const alice = { name: unique("alice"), id: 0 };
      const bob = { name: unique("bob"), id: 0 };
      const a = await openPage(browser, DESKTOP, problems);
      const laptop = await openPage(browser, DESKTOP, problems);
      const phone = await openPage(browser, PHONE, problems);
      for (const p of [a, laptop, phone]) await p.goto(server.url);
      alice.id = await register(a, alice.name);
      bob.id = await register(laptop, bob.name);
      // Bob's second device logs in with the password.
      await phone.getByLabel("Name", { exact: true }).fill(bob.name);
      await phone.getByLabel("Password", { exact: true }).fill(PASSWORD);
      await phone.getByRole("button", { name: "Log in" }).click();
      await phone.locator("#me").getByText(bob.name, { exact: true }).waitFor();

      await a.getByLabel("Friend's id or name").fill(String(bob.id));
      await a.getByRole("button", { name: "Add friend" }).click();
      await presence(a, bob.id, "online");
      await entry(a, `user:${bob.id}`).locator("button.contact").click();
      for (const text of ["one", "two"]) {
        await a.getByLabel("Message", { exact: true }).fill(text);
        await a.getByLabel("Message", { exact: true }).press("Enter");
        await messageItems(a, text).locator(".state", { hasText: /^sent$/ }).waitFor();
      }
      const unread = (p: Page, n: number) =>
        entry(p, `user:${alice.id}`).and(p.locator(`[data-unread="${n}"]`)).waitFor();
      await unread(laptop, 2);
      await unread(phone, 2);

      // Read on the laptop: the phone's count clears without a reload, Alice sees "seen".
      await entry(laptop, `user:${alice.id}`).locator("button.contact").click();
      await messageItems(laptop, "two").waitFor();
      await unread(laptop, 0);
      await unread(phone, 0);
      await messageItems(a, "two").locator(".state", { hasText: /^seen$/ }).waitFor();
      assertEquals(
        await messageItems(a, "one").locator(".state").textContent(),
        "sent",
        "seen only under the last one read",
      );

      // The phone reloads: the server's count (0), and each message once.
      await phone.reload();
      await phone.locator("#me").getByText(bob.name, { exact: true }).waitFor();
      await unread(phone, 0);
      // A new message while the laptop has nothing open (after a reload): 1 unread on both,
      // and still 1 after a reload.
      await laptop.reload();
      await laptop.locator("#me").getByText(bob.name, { exact: true }).waitFor();
      await a.getByLabel("Message", { exact: true }).fill("three");
      await a.getByLabel("Message", { exact: true }).press("Enter");
      await unread(phone, 1);
      await unread(laptop, 1);
      await phone.reload();
      await phone.locator("#me").getByText(bob.name, { exact: true }).waitFor();
      await unread(phone, 1);
      await entry(phone, `user:${alice.id}`).locator("button.contact").click();
      await messageItems(phone, "three").waitFor();
      assertEquals(
        await phone.locator("#messages li.message .text").allTextContents(),
        ["one", "two", "three"],
      );
      await unread(laptop, 0);
      await messageItems(a, "three").locator(".state", { hasText: /^seen$/ }).waitFor();
      assertEquals(await messageItems(a, "two").locator(".state").textContent(), "sent");
      await screenshot(a, "06-seen-desktop");
      assertEquals(problems, []);
    });
  });
});

Deno.test("web client: resumes with its token after a 1001, and stays away after a 4001", async () => {
  await withWorld("web_reconnect", async ({ start }) => {
    const first = await start();
    await withBrowser(async (browser) => {
      const problems: string[] = [];
      const page = await openPage(browser, DESKTOP, problems);
      await page.goto(first.url);
      const name = unique("carol");
      const id = await register(page, name);
      const status = page.locator("#connection");
      await status.getByText("Connected").waitFor();

      // The node drains (1001). A new node comes up on the same address; the page logs in there
      // with its token, on its own.
      await first.stop();
      await status.getByText(/^Connection lost: reconnecting/).waitFor();
      const second = await start({ env: { PORT: String(first.port), LOGIN_POLICY: "takeover" } });
      await status.getByText("Connected").waitFor({ timeout: 20_000 });
      await page.locator("#me").getByText(name, { exact: true }).waitFor();

      // The session is live: a message sent now arrives on the page.
      const other = await Client.connect(second.wsUrl);
      try {
        const sender = await other.request({
          type: "register",
          name: unique("dave"),
          password: PASSWORD,
        });
        assertEquals(sender.type, "registered");
        const login = await other.request({
          type: "login",
          name: (sender.user as { name: string }).name,
          password: PASSWORD,
        });
        assertEquals(login.type, "welcome");
        await other.request({ type: "send", to: { user: id }, text: "Welcome back" });
        await entry(page, `user:${(sender.user as { id: number }).id}`)
          .and(page.locator('[data-unread="1"]')).waitFor();
      } finally {
        await other.close();
      }

      // The same account logs in elsewhere under takeover: this page is closed with 4001, says so
      // in words, and does not come back by itself (which would in turn close the other login).
      const elsewhere = await Client.connect(second.wsUrl);
      try {
        const welcome = await elsewhere.request({ type: "login", name, password: PASSWORD });
        assertEquals(welcome.type, "welcome");
        await page.getByRole("alert").getByText(/opened in another window or device/).waitFor();
        await status.getByText("Disconnected: opened elsewhere").waitFor();
        await screenshot(page, "06-replaced-desktop");
        // Absence can only be watched for a while: longer than the first reconnection delays.
        await new Promise((resolve) => setTimeout(resolve, 1500));
        assertEquals(elsewhere.raw.readyState, WebSocket.OPEN);
        assertEquals(await status.textContent(), "Disconnected: opened elsewhere");
      } finally {
        await elsewhere.close();
      }
      assertEquals(problems, []);
    });
  });
});

/** Opens the actions of a list entry and runs the one named `action`. */
async function entryAction(page: Page, key: string, entryName: string, action: string) {
  const more = entry(page, key).getByRole("button", { name: `Actions for ${entryName}` });
  await more.click();
  assertEquals(await more.getAttribute("aria-expanded"), "true");
  await entry(page, key).getByRole("button", { name: action, exact: true }).click();
}

/** The accessible name (aria-label, else text) of the focused element. */
const focusedName = (page: Page) =>
  page.locator(":focus").evaluate((node) =>
    node.getAttribute("aria-label") ?? node.textContent?.trim() ?? ""
  );

Deno.test("web client: find people by name and befriend them, typing, unfriend, block and unblock, leave a group", async () => {
  await withWorld("web_people", async ({ start }) => {
    const [one, two] = [await start({ nodeId: "wpa" }), await start({ nodeId: "wpb" })];
    await withBrowser(async (browser) => {
      const problems: string[] = [];
      const tag = crypto.randomUUID().slice(0, 6);
      const alice = { name: `alice_${tag}`, id: 0 };
      const bob = { name: `Bob.${tag}`, id: 0 };
      const a = await openPage(browser, DESKTOP, problems);
      const b = await openPage(browser, DESKTOP, problems);
      await a.goto(one.url);
      await b.goto(two.url);
      alice.id = await register(a, alice.name);
      bob.id = await register(b, bob.name);

      // Alice finds Bob by the start of his name, in another case, with the keyboard only, and
      // adds him without knowing his id.
      const find = a.getByLabel("Find people by name");
      await find.fill(`bob.${tag.slice(0, 3).toUpperCase()}`);
      await find.press("Enter");
      const add = a.getByRole("button", { name: `Add ${bob.name} as a friend` });
      await add.waitFor();
      await a.locator("#find-status", { hasText: "1 person found" }).waitFor();
      await a.keyboard.press("Tab"); // The Search button,
      await a.keyboard.press("Tab"); // then the first one found.
      assertEquals(await focusedName(a), `Add ${bob.name} as a friend`);
      await a.keyboard.press("Enter");
      await presence(a, bob.id, "online");
      await b.getByText(`${alice.name} added you as a friend`).waitFor();
      await a.getByRole("button", { name: `Open the conversation with ${bob.name}` }).waitFor();
      // A whole name in the add form works as well as an id.
      await find.fill("nobody-by-that-name");
      await find.press("Enter");
      await a.locator("#find-status", {
        hasText: 'No one\'s name starts with "nobody-by-that-name"',
      })
        .waitFor();

      // Typing: Bob types, Alice's open conversation says so until his message arrives.
      await entry(a, `user:${bob.id}`).locator("button.contact").click();
      await entry(b, `user:${alice.id}`).locator("button.contact").click();
      await b.getByLabel("Message", { exact: true }).pressSequentially("Hello Ali");
      const typing = a.locator("#typing");
      await typing.getByText(`${bob.name} is typing…`).waitFor();
      assertEquals(await typing.getAttribute("role"), "status");
      await screenshot(a, "07-typing-desktop");
      await b.getByLabel("Message", { exact: true }).press("Enter");
      await messageItems(a, "Hello Ali").waitFor();
      await a.locator("#typing:empty").waitFor();

      // Unfriend from Bob's entry: both lists drop the friendship, Bob is told.
      await entryAction(a, `user:${bob.id}`, bob.name, `Unfriend ${bob.name}`);
      await a.getByText(`${bob.name} is no longer your friend`).waitFor();
      await b.getByText(`${alice.name} is no longer your friend`).waitFor();
      await a.locator(`#others li[data-key="user:${bob.id}"]`).waitFor();
      await b.locator(`#others li[data-key="user:${alice.id}"]`).waitFor();

      // Block from his entry (now among the others): he is listed as blocked, and his messages
      // are refused in words.
      await entryAction(a, `user:${bob.id}`, bob.name, `Block ${bob.name}`);
      await a.locator(`#blocked li[data-key="user:${bob.id}"]`).waitFor();
      await b.getByLabel("Message", { exact: true }).fill("Are you there?");
      await b.getByLabel("Message", { exact: true }).press("Enter");
      await messageItems(b, "Are you there?").locator(".state", {
        hasText: "not sent: This user does not accept your messages",
      }).waitFor();

      // Unblock with the keyboard: Bob's retry goes through.
      const more = entry(a, `user:${bob.id}`).getByRole("button", {
        name: `Actions for ${bob.name}`,
      });
      await more.focus();
      await a.keyboard.press("Enter");
      assertEquals(await focusedName(a), `Unblock ${bob.name}`);
      await a.keyboard.press("Enter");
      await a.locator(`#blocked li[data-key="user:${bob.id}"]`).waitFor({ state: "detached" });
      await messageItems(b, "Are you there?").getByRole("button", { name: "Retry" }).click();
      // Alice has the conversation open, so her read may turn it to "seen" before we look.
      await messageItems(b, "Are you there?").locator(".state", { hasText: /^(sent|seen)$/ })
        .waitFor();
      await messageItems(a, "Are you there?").waitFor();

      // A group Bob joins, which Alice leaves from its entry; Bob sees her go.
      await a.getByLabel("Group name").fill("Climbing");
      await a.getByRole("button", { name: "Create group" }).click();
      const groupKey = await a.locator("#groups li").first().getAttribute("data-key");
      const groupId = Number(groupKey!.split(":")[1]);
      await b.getByLabel("Group id").fill(String(groupId));
      await b.getByRole("button", { name: "Join group" }).click();
      await entry(a, `group:${groupId}`).locator(".presence", { hasText: "2 members" }).waitFor();
      await screenshot(a, "08-people-desktop");
      await entryAction(a, `group:${groupId}`, "Climbing", "Leave group Climbing");
      await entry(a, `group:${groupId}`).waitFor({ state: "detached" });
      await a.getByText(`You left Climbing`).waitFor();
      await b.getByText(`${alice.name} left Climbing`).waitFor();
      await entry(b, `group:${groupId}`).locator(".presence", { hasText: "1 member," }).waitFor();

      assertEquals(problems, []);
    });
  });
});

Deno.test("web client: edit and delete own messages, shown as edited and deleted on every device", async () => {
  await withWorld("web_edits", async ({ start }) => {
    const server = await start({ env: { LOGIN_POLICY: "multi" } });
    await withBrowser(async (browser) => {
      const problems: string[] = [];
      const alice = { name: unique("alice"), id: 0 };
      const bob = { name: unique("bob"), id: 0 };
      const a = await openPage(browser, DESKTOP, problems);
      const b = await openPage(browser, PHONE, problems);
      await a.goto(server.url);
      await b.goto(server.url);
      alice.id = await register(a, alice.name);
      bob.id = await register(b, bob.name);
      await a.getByLabel("Friend's id or name").fill(bob.name);
      await a.getByRole("button", { name: "Add friend" }).click();
      await presence(a, bob.id, "online");

      // Alice's second device: another browser, the same account.
      const a2 = await openPage(browser, DESKTOP, problems);
      await a2.goto(server.url);
      await a2.getByLabel("Name", { exact: true }).fill(alice.name);
      await a2.getByLabel("Password", { exact: true }).fill(PASSWORD);
      await a2.getByRole("button", { name: "Log in" }).click();
      await a2.locator("#me").getByText(alice.name, { exact: true }).waitFor();

      await entry(a, `user:${bob.id}`).locator("button.contact").click();
      await a.getByLabel("Message", { exact: true }).fill("Meet at 7");
      await a.getByLabel("Message", { exact: true }).press("Enter");
      await messageItems(a, "Meet at 7").locator(".state", { hasText: /^sent$/ }).waitFor();
      await entry(b, `user:${alice.id}`).locator("button.contact").click();
      await entry(a2, `user:${bob.id}`).locator("button.contact").click();
      for (const page of [b, a2]) await messageItems(page, "Meet at 7").waitFor();
      // Only one's own messages have the controls.
      assertEquals(await messageItems(b, "Meet at 7").getByRole("button").count(), 0);

      // Edit with the keyboard: Edit, the new text, Enter.
      const edit = messageItems(a, "Meet at 7").getByRole("button", { name: "Edit", exact: true });
      await edit.focus();
      await a.keyboard.press("Enter");
      const box = a.getByRole("textbox", { name: "Edit message" });
      assertEquals(await box.inputValue(), "Meet at 7");
      await box.fill("Meet at 8 instead");
      await box.press("Enter");
      for (const page of [a, b, a2]) {
        await messageItems(page, "Meet at 8 instead").locator(".state", { hasText: /^edited$/ })
          .waitFor();
      }
      assertEquals(await messageItems(a, "Meet at 7").count(), 0);
      assertEquals(
        await focusedName(a),
        "Edit",
        "focus returns to the message's Edit control",
      );
      await screenshot(a, "09-edited-desktop");

      // The README's picture: a friend typing under an edited message and an answer, a group.
      await a.getByLabel("Group name").fill("Climbing club");
      await a.getByRole("button", { name: "Create group" }).click();
      await entry(a, `user:${bob.id}`).locator("button.contact").click();
      await b.getByLabel("Message", { exact: true }).fill("Perfect, see you there");
      await b.getByLabel("Message", { exact: true }).press("Enter");
      await messageItems(a, "Perfect, see you there").waitFor();
      // Typed over a few seconds, as people type: a notice passes once 1.5 s have gone by.
      await b.getByLabel("Message", { exact: true }).pressSequentially(
        "Bringing the climbing shoes",
        {
          delay: 120,
        },
      );
      await a.locator("#typing").getByText(`${bob.name} is typing…`).waitFor();
      await a.locator("#sidebar").evaluate((node) => node.scrollTop = 0);
      await screenshot(a, "11-readme-desktop");

      // Escape leaves an edit unsaved.
      await messageItems(a, "Meet at 8 instead").getByRole("button", { name: "Edit", exact: true })
        .click();
      await a.getByRole("textbox", { name: "Edit message" }).fill("never sent");
      await a.getByRole("textbox", { name: "Edit message" }).press("Escape");
      await messageItems(a, "Meet at 8 instead").waitFor();

      // Delete: gone on every device, in words.
      await messageItems(a, "Meet at 8 instead").getByRole("button", {
        name: "Delete",
        exact: true,
      })
        .click();
      for (const page of [a, b, a2]) {
        await page.locator("#messages li.message[data-deleted='true']", {
          hasText: "This message was deleted",
        }).waitFor();
        assertEquals(await messageItems(page, "Meet at 8 instead").count(), 0);
      }
      assertEquals(
        await a.locator("#messages li[data-deleted='true']").getByRole("button").count(),
        0,
      );
      await screenshot(b, "10-deleted-phone");
      assertEquals(problems, []);
    });
  });
});
