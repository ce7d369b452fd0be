/**
 * @module The container's own pieces, run for real where no container engine is: the entrypoint
 * script (reset, then `exec` serve, so that SIGTERM reaches Deno) and nginx's configuration.
 */
import { assert, assertEquals } from "./support/assert.ts";
import { loggedIn } from "./support/client.ts";
import { stateOf, withWorld } from "./support/fixture.ts";
import { startServer } from "./support/server.ts";

const ROOT = new URL("../", import.meta.url).pathname;

Deno.test("entrypoint resets this node, then execs serve, which drains on SIGTERM", async () => {
  await withWorld("entrypoint", async ({ databaseUrl, sql }) => {
    const server = await startServer({
      databaseUrl,
      nodeId: "container-1",
      command: { cmd: "sh", args: [`${ROOT}docker/entrypoint.sh`] },
    });
    try {
      // reset ran first, as its own process, and logged what it cleared.
      assert(server.logs.some((l) => l.event === "reset.node"), server.text.join("\n"));
      const { client, user } = await loggedIn(server.wsUrl);
      assertEquals(await stateOf(sql, user.id), "online");
      // The pid the test spawned is Deno's own now: the shell exec'd it.
      server.kill("SIGTERM");
      assertEquals((await client.closedWithin(10_000)).code, 1001);
      const status = await server.exited();
      assertEquals(status.code, 0, server.text.join("\n"));
      assert(server.logs.some((l) => l.event === "node.drained"), "serve did not drain");
      assertEquals(await stateOf(sql, user.id), "offline");
    } finally {
      await server.stop();
    }
  });
});

Deno.test("nginx configuration of the cluster profile passes nginx -t", async () => {
  const nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"].find((p) => {
    try {
      return Deno.statSync(p).isFile;
    } catch {
      return false;
    }
  });
  assert(nginx, "nginx is not installed: install Debian's nginx-light (.ci/run does)");
  const out = await new Deno.Command("sh", {
    args: [`${ROOT}docker/nginx.test.sh`],
    // Not NGINX: nginx reads that variable as a list of inherited sockets.
    env: { NGINX_BIN: nginx, LISTEN: `127.0.0.1:${20000 + Math.floor(Math.random() * 20000)}` },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
  assertEquals(out.code, 0, text);
  assert(text.includes("test is successful"), text);
});
