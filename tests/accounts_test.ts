/**
 * @module Accounts over HTTP and WebSocket: every reply and error of PROTOCOL.md's "Before login".
 */
import { assert, assertEquals, assertMatch, assertNotEquals } from "./support/assert.ts";
import { Client, loggedIn, registerUser, resume } from "./support/client.ts";
import { withWorld } from "./support/fixture.ts";

const post = async (url: string, body: unknown) => {
  const r = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: r.status, body: await r.json() };
};

Deno.test("accounts over HTTP: register, name_taken regardless of case, bad_request, login", async () => {
  await withWorld("accounts_http", async ({ start, sql }) => {
    const server = await start();
    const name = `Http${crypto.randomUUID().slice(0, 8)}`;
    const password = "correct horse battery";

    const created = await post(`${server.url}/api/register`, { name, password });
    assertEquals(created.status, 201);
    assertEquals(created.body.user.name, name);
    assertEquals(typeof created.body.user.id, "number");

    const taken = await post(`${server.url}/api/register`, { name: name.toUpperCase(), password });
    assertEquals(taken, {
      status: 409,
      body: { error: "name_taken", message: taken.body.message },
    });

    for (
      const bad of [{ name: "has space", password }, { name, password: "short" }, "not json", [1]]
    ) {
      const r = await post(`${server.url}/api/register`, bad);
      assertEquals(r.status, 400, JSON.stringify(bad));
      assertEquals(r.body.error, "bad_request");
      assertMatch(r.body.message, /name|password|JSON object/);
    }

    const ok = await post(`${server.url}/api/login`, { name: name.toLowerCase(), password });
    assertEquals(ok.status, 200);
    assertEquals(ok.body.user, created.body.user);
    assertEquals(typeof ok.body.token, "string");

    for (
      const bad of [{ name, password: "wrong password" }, { name: "nobody_here", password }, {}]
    ) {
      const r = await post(`${server.url}/api/login`, bad);
      assertEquals(r, { status: 401, body: { error: "bad_credentials", message: r.body.message } });
    }

    const [row] = await sql<{ password_hash: string }[]>`
      select password_hash from users where id = ${created.body.user.id}`;
    assert(!row.password_hash.includes(password), "the password is stored in clear");
    assertMatch(row.password_hash, /^scrypt\$/);
  });
});

Deno.test("accounts over WebSocket: register, login by password and token, logout revokes", async () => {
  await withWorld("accounts_ws", async ({ start, sql }) => {
    const server = await start();
    const client = await Client.connect(server.wsUrl);
    const user = await registerUser(client, "Ws");

    const taken = await client.request({
      type: "register",
      name: user.name.toLowerCase(),
      password: user.password,
    });
    assertEquals([taken.type, taken.code], ["error", "name_taken"]);
    const badName = await client.request({ type: "register", name: "", password: user.password });
    assertEquals([badName.code, badName.message], ["bad_frame", badName.message]);
    assertMatch(badName.message as string, /"name"/);
    const badPassword = await client.request({
      type: "register",
      name: "okname",
      password: "1234567",
    });
    assertMatch(badPassword.message as string, /"password"/);

    const before = await client.request({ type: "send", to: { user: user.id }, text: "hi" });
    assertEquals(before.code, "unauthenticated");

    const wrong = await client.request({
      type: "login",
      name: user.name,
      password: "not the password",
    });
    const missing = await client.request({
      type: "login",
      name: "no_such_user",
      password: "whatever1",
    });
    assertEquals([wrong.code, missing.code], ["bad_credentials", "bad_credentials"]);
    assertEquals(wrong.message, missing.message);

    const welcome = await client.request({
      type: "login",
      name: user.name,
      password: user.password,
    });
    assertEquals(welcome.type, "welcome");
    assertEquals(welcome.user, { id: user.id, name: user.name });
    assertEquals([welcome.friends, welcome.groups], [[], []]);
    const token = welcome.token as string;
    assertEquals(token.length >= 43, true);

    const [stored] = await sql<{ n: number }[]>`
      select count(*) as n from auth_tokens where user_id = ${user.id}
        and token_hash = sha256(convert_to(${token}, 'UTF8'))`;
    assertEquals(stored.n, 1);
    const clear = await sql`select 1 from auth_tokens where encode(token_hash, 'escape') like ${
      "%" + token + "%"
    }`;
    assertEquals(clear.length, 0);

    const bye = await client.request({ type: "logout" });
    assertEquals(bye.type, "bye");
    assertEquals((await client.closed).code, 1000);

    const again = await Client.connect(server.wsUrl);
    const revoked = await again.request({ type: "login", token });
    assertEquals(revoked.code, "bad_credentials");
    const bogus = await again.request({ type: "login", token: "x".repeat(43) });
    assertEquals(bogus.code, "bad_credentials");
    await again.close();
  });
});

Deno.test("login by token resumes the session on a new socket and returns the same token", async () => {
  await withWorld("accounts_token", async ({ start }) => {
    const server = await start();
    const { client, user, token } = await loggedIn(server.wsUrl);
    await client.close();
    // The close above ends the first session; until it has, `reject` would refuse a second login.
    const { client: resumed, welcome } = await resume(server.wsUrl, token);
    assertEquals(welcome.user, { id: user.id, name: user.name });
    assertEquals(welcome.token, token);
    await resumed.close();
  });
});

Deno.test("login rejects a second session of a user who is online", async () => {
  await withWorld("accounts_reject", async ({ start }) => {
    const server = await start();
    const { client, user } = await loggedIn(server.wsUrl);
    const second = await Client.connect(server.wsUrl);
    const refused = await second.request({
      type: "login",
      name: user.name,
      password: user.password,
    });
    assertEquals(refused.code, "already_online");
    assertNotEquals(refused.message, "");
    await Promise.all([client.close(), second.close()]);
  });
});
