/**
 * @module Settings: defaults, every variable's bad value, and the process exiting 2 on one.
 */
import { assert, assertEquals, assertMatch, assertThrows } from "./support/assert.ts";
import { ConfigError, loadConfig, SETTINGS, settingsTable } from "../src/config.ts";
import { runMain } from "./support/server.ts";

Deno.test("config applies DESIGN.md's defaults when nothing is set", () => {
  const c = loadConfig({}, "box-1");
  assertEquals(c.databaseUrl, undefined);
  assertEquals(c.dataDir, "./data");
  assertEquals(c.host, "0.0.0.0");
  assertEquals(c.port, 8080);
  assertEquals(c.nodeId, "box-1");
  assertEquals(c.loginPolicy, "reject");
  assertEquals(c.heartbeatMs, 1000);
  assertEquals(c.nodeTtlMs, 15000);
  assertEquals(c.idleTimeoutMs, 30000);
  assertEquals(c.shutdownTimeoutMs, 8000);
  assertEquals(c.authTimeoutMs, 10000);
  assertEquals(c.presenceGraceMs, 3000);
  assertEquals(c.maxFrameBytes, 65536);
  assertEquals(c.rateLimitPerSec, 30);
  assertEquals(c.rateLimitBurst, 60);
  assertEquals(c.loginFailuresPerMin, 10);
  assertEquals(c.registrationsPerMin, 30);
  assertEquals(c.tokenTtlMs, 30 * 24 * 3600 * 1000);
  assertEquals(c.allowedOrigins, []);
  assertEquals(c.legacyTcpPort, undefined);
  assertEquals(c.logLevel, "info");
  assert(Object.isFrozen(c));
});

Deno.test("config parses given values", () => {
  const c = loadConfig({
    DATABASE_URL: "postgres://u:p@db:5432/x",
    PORT: "0",
    LOGIN_POLICY: "takeover",
    ALLOWED_ORIGINS: "https://a.example, http://b.example:8080",
    LEGACY_TCP_PORT: "6000",
  }, "h");
  assertEquals(c.databaseUrl, "postgres://u:p@db:5432/x");
  assertEquals(c.port, 0);
  assertEquals(c.loginPolicy, "takeover");
  assertEquals(c.allowedOrigins, ["https://a.example", "http://b.example:8080"]);
  assertEquals(c.legacyTcpPort, 6000);
});

/** A value each variable must refuse. */
const BAD: Record<string, string> = {
  DATABASE_URL: "mysql://x",
  DATA_DIR: "data\tdir",
  HOST: "not a host!",
  PORT: "70000",
  NODE_ID: "no spaces",
  LOGIN_POLICY: "maybe",
  HEARTBEAT_MS: "abc",
  NODE_TTL_MS: "-5",
  IDLE_TIMEOUT_MS: "1.5",
  SHUTDOWN_TIMEOUT_MS: "soon",
  AUTH_TIMEOUT_MS: "10s",
  PRESENCE_GRACE_MS: "x",
  MAX_FRAME_BYTES: "12",
  MAX_CONNECTIONS: "0",
  RATE_LIMIT_PER_SEC: "fast",
  RATE_LIMIT_BURST: "-1",
  LOGIN_FAILURES_PER_MIN: "0",
  REGISTRATIONS_PER_MIN: "many",
  TOKEN_TTL_MS: "forever",
  ALLOWED_ORIGINS: "not a url",
  LEGACY_TCP_PORT: "-1",
  BUS_URL: "http://127.0.0.1:4222",
  SYNC_LIMIT: "0",
  LOG_LEVEL: "loud",
};

Deno.test("config refuses a bad value of every variable, naming it and the value", () => {
  for (const s of Object.values(SETTINGS)) {
    const bad = BAD[s.name];
    assert(bad !== undefined, `no bad value listed for ${s.name}`);
    const error = assertThrows(() => loadConfig({ [s.name]: bad }, "h"), ConfigError);
    // Blank values count as unset, so only trimmed text can be quoted.
    if (bad.trim()) {
      assertMatch(error.message, new RegExp(`^Invalid ${s.name} "${escape(bad.trim())}": `));
    }
  }
});

Deno.test("config refuses a NODE_TTL_MS shorter than two heartbeats", () => {
  assertThrows(
    () => loadConfig({ HEARTBEAT_MS: "1000", NODE_TTL_MS: "1500" }, "h"),
    ConfigError,
    "NODE_TTL_MS",
  );
});

Deno.test("config table in the README lists every setting", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  // Compared cell by cell: `deno fmt` pads the README's columns.
  const cells = (text: string) =>
    text.split("\n").filter((l) => l.startsWith("|") && !/^\|[-| ]+\|$/.test(l))
      .map((l) => l.split("|").slice(1, -1).map((c) => c.trim()).join(" | "));
  const readmeRows = new Set(cells(readme));
  for (const row of cells(settingsTable())) {
    assert(readmeRows.has(row), `README.md's configuration table lacks or differs in: ${row}`);
  }
});

Deno.test("main exits 2 with a sentence naming a bad variable", async () => {
  for (
    const [name, value] of [["PORT", "http"], ["LOGIN_POLICY", "maybe"], ["NODE_TTL_MS", "abc"]]
  ) {
    const r = await runMain(["serve"], { [name]: value });
    assertEquals(r.code, 2, `${name}: ${r.stderr}`);
    assertMatch(r.stderr, new RegExp(`Invalid ${name} "${value}"`));
  }
});

Deno.test("main exits 2 with its usage for an unknown command", async () => {
  const r = await runMain(["launch"], {});
  assertEquals(r.code, 2);
  assertMatch(r.stderr, /Usage: main.ts serve/);
});

function escape(s: string) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
