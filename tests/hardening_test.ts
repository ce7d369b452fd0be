/**
 * @module Abuse and operability: throttles, connection limits, the Origin check, security
 * headers, body limits, the bad-frame limit, secrets kept out of logs and tables, metrics and logs.
 */
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { Client, eventually, loggedIn, registerUser } from "./support/client.ts";
import { withWorld } from "./support/fixture.ts";
import { freePort } from "./support/server.ts";
import { SlidingWindow } from "../src/chat/throttle.ts";

Deno.test("throttle window allows `limit` events a window per key and says when to retry", () => {
  const w = new SlidingWindow(3, 60_000);
  for (let i = 0; i < 3; i++) {
    assertEquals(w.wait("a", 1000 + i), 0);
    w.record("a", 1000 + i);
  }
  assertEquals(w.wait("a", 2000), 60_000 - 1000);
  assertEquals(w.wait("b", 2000), 0);
  assertEquals(w.wait("a", 61_000), 0);
});

Deno.test("failed logins beyond LOGIN_FAILURES_PER_MIN answer rate_limited, per name and per address", async () => {
  await withWorld("abuse_login", async ({ start }) => {
    const server = await start({ env: { LOGIN_FAILURES_PER_MIN: "3" } });
    const c = await Client.connect(server.wsUrl);
    const victim = await registerUser(c);
    const other = await registerUser(c);
    for (let i = 0; i < 3; i++) {
      const r = await c.request({ type: "login", name: victim.name, password: `guess-${i}-wrong` });
      assertEquals(r.code, "bad_credentials");
    }
    // Even the right password waits now: a guesser cannot tell it found it.
    const limited = await c.request({
      type: "login",
      name: victim.name,
      password: victim.password,
    });
    assertEquals(limited.code, "rate_limited");
    assert((limited.retryAfterMs as number) > 50_000);
    // The address is throttled as well, whatever name it tries next.
    assertEquals(
      (await c.request({ type: "login", name: other.name, password: other.password })).code,
      "rate_limited",
    );
    const http = await fetch(`${server.url}/api/login`, {
      method: "POST",
      body: JSON.stringify({ name: other.name, password: other.password }),
    });
    assertEquals(http.status, 429);
    assertEquals((await http.json()).error, "rate_limited");
    await c.close();
  });
});

Deno.test("registrations beyond REGISTRATIONS_PER_MIN per address answer rate_limited", async () => {
  await withWorld("abuse_register", async ({ start, sql }) => {
    const server = await start({ env: { REGISTRATIONS_PER_MIN: "2" } });
    const c = await Client.connect(server.wsUrl);
    await registerUser(c);
    await registerUser(c);
    const third = await c.request({ type: "register", name: "third_one", password: "password123" });
    assertEquals(third.code, "rate_limited");
    assert((third.retryAfterMs as number) > 0);
    const http = await fetch(`${server.url}/api/register`, {
      method: "POST",
      body: JSON.stringify({ name: "fourth_one", password: "password123" }),
    });
    assertEquals(http.status, 429);
    await http.body?.cancel();
    assertEquals((await sql`select 1 from users`).length, 2);
    await c.close();
  });
});

Deno.test("upgrades beyond MAX_CONNECTIONS answer 503", async () => {
  await withWorld("abuse_max_conn", async ({ start }) => {
    const server = await start({ env: { MAX_CONNECTIONS: "2" } });
    const [a, b] = [await Client.connect(server.wsUrl), await Client.connect(server.wsUrl)];
    const refused = await fetch(`${server.url}/ws`, {
      headers: {
        upgrade: "websocket",
        connection: "Upgrade",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        "sec-websocket-version": "13",
      },
    });
    assertEquals(refused.status, 503);
    await refused.body?.cancel();
    await a.close();
    // A slot is free again once a socket closes.
    let c: Client | undefined;
    for (let i = 0; i < 50 && !c; i++) {
      c = await Client.connect(server.wsUrl).catch(() => undefined);
      if (!c) await new Promise((r) => setTimeout(r, 50));
    }
    assert(c, "no slot after a close");
    await Promise.all([b.close(), c.close()]);
  });
});

Deno.test("the Origin check refuses foreign browser origins and allows configured ones", async () => {
  await withWorld("abuse_origin", async ({ start }) => {
    const server = await start({ env: { ALLOWED_ORIGINS: "https://chat.example" } });
    const upgrade = (origin?: string) =>
      fetch(`${server.url}/ws`, {
        headers: {
          upgrade: "websocket",
          connection: "Upgrade",
          "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
          "sec-websocket-version": "13",
          ...(origin ? { origin } : {}),
        },
      }).then(async (r) => {
        await r.body?.cancel();
        return r.status;
      });
    assertEquals(await upgrade("https://evil.example"), 403);
    assertEquals(await upgrade("null"), 403);
    assertEquals(await upgrade("https://chat.example"), 101);
    assertEquals(await upgrade(`http://127.0.0.1:${server.port}`), 101);
    assertEquals(await upgrade(), 101);
  });
});

Deno.test("HTTP responses carry security headers, and API bodies are size-limited", async () => {
  await withWorld("abuse_http", async ({ start }) => {
    const server = await start();
    const health = await fetch(`${server.url}/healthz`);
    await health.body?.cancel();
    assertEquals(health.headers.get("x-content-type-options"), "nosniff");
    assertEquals(health.headers.get("x-frame-options"), "SAMEORIGIN");
    assertMatch(health.headers.get("content-security-policy") ?? "", /default-src 'self'/);
    const big = await fetch(`${server.url}/api/register`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ name: "big", password: "x".repeat(10_000) }),
    });
    assertEquals(big.status, 413);
    assertEquals((await big.json()).error, "bad_request");
  });
});

Deno.test("a socket sending more than 50 bad frames a minute gets 50 errors, then 1008", async () => {
  await withWorld("abuse_bad_frames", async ({ start }) => {
    const server = await start();
    for (const loggedInFirst of [false, true]) {
      const c = loggedInFirst
        ? (await loggedIn(server.wsUrl)).client
        : await Client.connect(server.wsUrl);
      c.skipReceived();
      const before = c.frames.length;
      // Non-JSON and invalid requests count alike.
      for (let i = 0; i < 51; i++) c.send(i % 2 === 0 ? "not json" : { type: "send", ref: i });
      assertEquals((await c.closedWithin(5000)).code, 1008);
      const errors = c.frames.slice(before).filter((f) => f.type === "error");
      assertEquals(errors.length, 50);
      assert(errors.every((f) => f.code === "bad_json" || f.code === "bad_frame"));
    }
    // A client that goes on sending after the 51st loses the socket, and is never answered more
    // than 50 times. Deno drops the connection without a close frame when data keeps arriving
    // after close(), and a TCP close with unread data resets the connection: the client's kernel
    // then discards whatever answers it had not read yet (a busy client reads late). So neither
    // the close code nor the number of answers that survive is promised; the bound is.
    const flood = await Client.connect(server.wsUrl);
    for (let i = 0; i < 80; i++) flood.send("not json");
    await flood.closedWithin(5000);
    const answers = flood.frames.filter((f) => f.type === "error");
    assert(answers.length <= 50, `${answers.length} answers to a flood of 80 bad frames`);
    assert(answers.every((f) => f.code === "bad_json"));
  });
});

Deno.test("passwords and tokens appear in no log line, error, metric or table", async () => {
  await withWorld("secrets", async ({ start, sql }) => {
    const server = await start({ env: { LOG_LEVEL: "debug" } });
    const a = await loggedIn(server.wsUrl);
    const b = await loggedIn(server.wsUrl);
    await a.client.request({ type: "friend.add", user: b.user.id });
    await a.client.request({ type: "send", to: { user: b.user.id }, text: "hello" });
    await a.client.request({ type: "login", name: a.user.name, password: a.user.password }); // already in
    await b.client.request({ type: "logout" });
    const c = await Client.connect(server.wsUrl);
    await c.request({ type: "login", token: b.token }); // revoked: bad_credentials
    await c.request({ type: "login", name: b.user.name, password: `${b.user.password}x` });
    await fetch(`${server.url}/api/login`, {
      method: "POST",
      body: JSON.stringify({ name: a.user.name, password: a.user.password }),
    }).then((r) => r.body?.cancel());
    const metrics = await fetch(`${server.url}/metrics`).then((r) => r.text());
    await Promise.all([a.client.close(), c.close()]);
    server.kill("SIGTERM");
    await server.exited();

    const tables = await sql<{ dump: string }[]>`
      select string_agg(t::text, E'\\n') as dump from (
        select row_to_json(u)::text as t from users u
        union all select row_to_json(x)::text from auth_tokens x
        union all select row_to_json(s)::text from sessions s
        union all select row_to_json(m)::text from messages m) rows`;
    const haystacks = {
      "server output": server.text.join("\n"),
      "replies": [...a.client.frames, ...b.client.frames, ...c.frames]
        .filter((f) => f.type !== "welcome").map((f) => JSON.stringify(f)).join("\n"),
      "metrics": metrics,
      "tables": tables[0].dump,
    };
    for (const [where, text] of Object.entries(haystacks)) {
      for (const secret of [a.user.password, b.user.password, a.token, b.token]) {
        assert(!text.includes(secret), `a secret appears in the ${where}`);
      }
    }
    assert(server.text.length > 10, "the server logged almost nothing; the scan proves little");
  });
});

Deno.test("metrics: /metrics is Prometheus text with the node's counters, gauges and histograms", async () => {
  await withWorld("metrics", async ({ start }) => {
    const server = await start();
    const a = await loggedIn(server.wsUrl);
    const b = await loggedIn(server.wsUrl);
    await a.client.request({ type: "send", to: { user: b.user.id }, text: "counted" });
    await b.client.next((f) => f.type === "message");
    const r = await fetch(`${server.url}/metrics`);
    assertMatch(r.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
    const samples = parsePrometheus(await r.text());
    assertEquals(samples.get('parley_logins_total{result="ok"}'), 2);
    assertEquals(samples.get("parley_messages_sent_total"), 1);
    assertEquals(samples.get("parley_messages_delivered_total"), 1);
    assertEquals(samples.get("parley_send_commit_seconds_count"), 1);
    assertEquals(samples.get("parley_send_push_seconds_count"), 1);
    assertEquals(samples.get("parley_sockets_open"), 2);
    assertEquals(samples.get("parley_sessions"), 2);
    assertEquals(samples.get("parley_waiting_messages"), 1);
    assertEquals(samples.get("parley_draining"), 0);
    // The logins' presence events come back through PostgreSQL; a node skips only its own
    // message payloads, having delivered those messages itself.
    await eventually(
      async () => {
        const again = parsePrometheus(await fetch(`${server.url}/metrics`).then((r) => r.text()));
        return (again.get('parley_bus_events_total{type="presence"}') ?? 0) >= 2;
      },
      5000,
      "the logins' presence events counted",
    );
    assert((samples.get("parley_heartbeat_age_seconds") ?? 99) < 5);
    assert((samples.get('parley_memory_bytes{kind="rss"}') ?? 0) > 10_000_000);
    await Promise.all([a.client.close(), b.client.close()]);
  });
});

Deno.test("logs: one JSON object per line with time, level, node and event; LOG_LEVEL filters", async () => {
  await withWorld("logs", async ({ start }) => {
    const info = await start({ nodeId: "log-info" });
    const { client } = await loggedIn(info.wsUrl);
    await fetch(`${info.url}/api/login`, { method: "POST", body: "{}" }).then((r) =>
      r.body?.cancel()
    );
    await client.close();
    await info.waitForLog((l) => l.event === "session.closed");
    for (const line of info.text) {
      const parsed = JSON.parse(line);
      assertEquals(typeof parsed.time, "string");
      assert(["debug", "info", "warn", "error"].includes(parsed.level), line);
      assertEquals(parsed.node, "log-info");
      assertEquals(typeof parsed.event, "string");
    }
    const access = info.logs.find((l) => l.event === "http.access" && l.path === "/api/login");
    assertEquals(access?.status, 401);
    // An expected error carries no stack trace.
    assert(!info.text.some((l) => l.includes('"stack"')));

    // At warn it does not log the port it listens on, so it gets a fixed one.
    const quiet = await start({
      nodeId: "log-warn",
      env: { LOG_LEVEL: "warn", PORT: String(await freePort()) },
    });
    const q = await loggedIn(quiet.wsUrl);
    await q.client.close();
    quiet.kill("SIGTERM");
    await quiet.exited();
    assert(
      quiet.logs.every((l) => l.level === "warn" || l.level === "error"),
      quiet.text.join("\n"),
    );
    assertEquals(quiet.logs.some((l) => l.event === "http.listening"), false);
  });
});

/** Sample name (with labels) to value, from Prometheus' text format. */
function parsePrometheus(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    assert(m, `not a Prometheus sample line: ${line}`);
    samples.set(m[1], Number(m[2]));
  }
  return samples;
}
