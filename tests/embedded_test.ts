/**
 * @module The embedded default: `serve` without DATABASE_URL runs on PGlite in DATA_DIR, and what
 * it stores survives a restart.
 */
import { assertEquals } from "./support/assert.ts";
import { Client, registerUser } from "./support/client.ts";
import { startServer } from "./support/server.ts";

Deno.test("embedded serve works without DATABASE_URL and keeps its data across a restart", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "parley-embedded-" });
  const env = { DATA_DIR: dataDir, DATABASE_URL: "" };
  try {
    const first = await startServer({ env });
    const a = await Client.connect(first.wsUrl);
    const user = await registerUser(a);
    const welcome = await a.request({ type: "login", name: user.name, password: user.password });
    assertEquals(welcome.type, "welcome");
    const b = await Client.connect(first.wsUrl);
    const other = await registerUser(b);
    const sent = await a.request({
      type: "send",
      to: { user: other.id },
      text: "kept while you were away",
    });
    assertEquals(sent.type, "sent");
    await b.close();
    first.kill("SIGTERM");
    assertEquals((await a.closed).code, 1001);
    assertEquals((await first.exited()).code, 0);

    const second = await startServer({ env });
    const c = await Client.connect(second.wsUrl);
    const again = await c.request({ type: "login", name: other.name, password: other.password });
    assertEquals(again.type, "welcome");
    const waiting = await c.next((f) => f.type === "message");
    assertEquals((waiting.message as { text: string }).text, "kept while you were away");
    await c.close();
    assertEquals((await second.stop()).code, 0);
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});
