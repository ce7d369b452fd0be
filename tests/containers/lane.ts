/**
 * @module The container lane (`deno task test:containers`): builds the image and runs it with
 * whichever engine answers, Docker or podman's Docker API, through compose.yaml as a platform
 * would. Not named *_test.ts: `deno task test` leaves it alone, since it needs an engine.
 */
import { assert, assertEquals, assertNotEquals } from "../support/assert.ts";
import { Client, eventually, loggedIn } from "../support/client.ts";
import { type Sql, sqlClient } from "../support/context.ts";
import { stateOf } from "../support/fixture.ts";
import { freePort } from "../support/server.ts";
import { docker, type Engine, engine, message } from "./engine.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const LANE = new URL("./", import.meta.url).pathname;
// One tag for the lane, rebuilt by every run (layers come from the engine's cache).
const IMAGE = "parley:lane";
const TEST_PACKAGES = ["testcontainers", "@testcontainers", "playwright-core", "fast-check"];
const SERVER_PACKAGES = ["hono", "postgres", "zod"];

let built: Promise<void> | undefined;

/** Builds the image once per run, through compose's own build (the `image` service). */
function imageBuilt(e: Engine): Promise<void> {
  return built ??= (async () => {
    const project = new Project(e, "parley-lane-build");
    await project.compose(["build", "image"], 600_000);
    const size = Number(await docker(e, ["image", "inspect", "--format", "{{.Size}}", IMAGE]));
    console.log(`image ${IMAGE}: ${(size / 1e6).toFixed(0)} MB (${e.kind} ${e.version})`);
  })();
}

/** One compose project of its own per test: its own containers, network, volume and ports. */
class Project {
  readonly name: string;
  readonly appPort = freePort();
  readonly lbPort = freePort();
  readonly pgPort = freePort();
  // A /24 few networks use; a clash fails `up` with a message naming the overlap.
  readonly subnet = `172.30.${Math.floor(Math.random() * 250) + 1}.0/24`;
  #sql?: Sql;
  #extra: string[] = [];

  constructor(readonly engine: Engine, name?: string) {
    this.name = name ?? `parley-lane-${crypto.randomUUID().slice(0, 8)}`;
  }

  /** `docker compose` on compose.yaml plus the lane's additions, every profile selectable. */
  compose(args: string[], ms = 180_000): Promise<string> {
    const files = ["-f", `${ROOT}compose.yaml`, "-f", `${LANE}compose.lane.yaml`];
    return docker(this.engine, ["compose", "-p", this.name, ...files, ...args], {
      ms,
      env: {
        PARLEY_IMAGE: IMAGE,
        APP_PORT: String(this.appPort),
        LB_PORT: String(this.lbPort),
        PG_PORT: String(this.pgPort),
        LANE_SUBNET: this.subnet,
      },
    });
  }

  async up(services: string[]): Promise<void> {
    await imageBuilt(this.engine);
    // Names the profile so that cluster services may be named; `up` starts only those given.
    await this.compose(["--profile", "cluster", "up", "-d", "--no-build", ...services]);
  }

  async id(service: string): Promise<string> {
    const id = await this.compose(["--profile", "cluster", "ps", "-a", "-q", service]);
    assert(id !== "", `no container for service ${service} in ${this.name}`);
    return id.split("\n")[0];
  }

  inspect(id: string, format: string): Promise<string> {
    return docker(this.engine, ["inspect", "--format", format, id]);
  }

  async address(service: string): Promise<string> {
    const id = await this.id(service);
    return await this.inspect(id, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}");
  }

  /** Waits until the engine reports `service` healthy by its own HEALTHCHECK. */
  async healthy(service: string, ms = 120_000): Promise<void> {
    const id = await this.id(service);
    let last = "";
    await eventually(
      async () => {
        last = await this.inspect(
          id,
          "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
        );
        if (last.startsWith("exited")) throw new Error(`${service} exited: ${await this.logs(id)}`);
        return last.endsWith(" healthy");
      },
      ms,
      `${service} to be healthy (under podman without systemd, the health driver runs checks)`,
    )
      .catch(async (error) => {
        throw new Error(`${message(error)} (last: "${last}")\n${await this.logs(id)}`);
      });
  }

  async logs(id: string): Promise<string> {
    return await docker(this.engine, ["logs", "--tail", "30", id]).catch((e) => message(e));
  }

  get sql(): Sql {
    return this.#sql ??= sqlClient(`postgres://parley:parley@127.0.0.1:${this.pgPort}/parley`);
  }

  /** Which node holds `userId`'s session, once it has one. */
  async nodeOf(userId: number): Promise<string> {
    let node = "";
    await eventually(
      async () => {
        const rows = await this.sql<{ node_id: string }[]>`
        select node_id from sessions where user_id = ${userId}`;
        node = rows[0]?.node_id ?? "";
        return node !== "";
      },
      10_000,
      `a session of user ${userId}`,
    );
    return node;
  }

  /** Runs a container of the lane's own beside the project's (removed by down). */
  async run(name: string, args: string[]): Promise<void> {
    this.#extra.push(name);
    await docker(this.engine, ["run", "-d", "--name", name, ...args]);
  }

  async down(): Promise<void> {
    await this.#sql?.end({ timeout: 5 });
    for (const name of this.#extra) {
      await docker(this.engine, ["rm", "-f", name]).catch(() => {});
    }
    await this.compose(["--profile", "cluster", "down", "-v", "--remove-orphans", "-t", "5"]);
  }
}

async function withProject(fn: (project: Project) => Promise<void>): Promise<void> {
  const project = new Project(await engine());
  try {
    await fn(project);
  } finally {
    await project.down();
  }
}

async function healthzNode(url: string): Promise<string | undefined> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(5_000) });
    const body = await response.json() as { node?: string };
    return response.ok ? body.node : undefined;
  } catch {
    return undefined;
  }
}

async function login(url: string, user: { name: string; password: string }) {
  const client = await Client.connect(url);
  const reply = await client.request({ type: "login", name: user.name, password: user.password });
  return { client, reply };
}

Deno.test("image holds only the server's packages", async () => {
  const e = await engine();
  await imageBuilt(e);
  const listing = await docker(e, [
    "run",
    "--rm",
    "--entrypoint",
    "ls",
    IMAGE,
    "/deno-dir/npm/registry.npmjs.org",
  ]);
  const packages = listing.split("\n");
  for (const name of TEST_PACKAGES) {
    assert(!packages.includes(name), `test package ${name} is in the image: ${packages}`);
  }
  for (const name of SERVER_PACKAGES) {
    assert(packages.includes(name), `server package ${name} is missing: ${packages}`);
  }
});

Deno.test("container turns healthy by its own HEALTHCHECK, and a stop drains: 1001, exit 0, user offline", async () => {
  await withProject(async (project) => {
    await project.up(["app"]);
    const id = await project.id("app");
    // The image's own check (compose.yaml sets none for app): the entrypoint's command. Read
    // from the container: podman's Docker API leaves it out of an image's inspect.
    const check = JSON.parse(await project.inspect(id, "{{json .Config.Healthcheck}}"));
    assertEquals(check?.Test, ["CMD", "/app/docker/entrypoint.sh", "healthcheck"]);
    await project.healthy("app");
    const { client, user } = await loggedIn(`ws://127.0.0.1:${project.appPort}/ws`);
    assertEquals(await stateOf(project.sql, user.id), "online");
    // docker stop: SIGTERM to tini, which passes it to Deno; SIGKILL only after the grace period.
    await project.compose(["stop", "app"]);
    assertEquals((await client.closedWithin(10_000)).code, 1001);
    assertEquals(await project.inspect(id, "{{.State.ExitCode}}"), "0", await project.logs(id));
    assertEquals(await stateOf(project.sql, user.id), "offline");
  });
});

Deno.test("container killed with SIGKILL and started again has its users offline before /healthz first answers", async () => {
  await withProject(async (project) => {
    await project.up(["app"]);
    await project.healthy("app");
    const wsUrl = `ws://127.0.0.1:${project.appPort}/ws`;
    const { client, user } = await loggedIn(wsUrl);
    const id = await project.id("app");
    await docker(project.engine, ["kill", "--signal", "KILL", id]);
    await client.closedWithin(10_000);
    await eventually(async () => (await project.inspect(id, "{{.State.Running}}")) === "false");
    // Nothing could clean up, and the lease (600 s here) outlives the test: still online.
    assertEquals(await stateOf(project.sql, user.id), "online");

    await docker(project.engine, ["start", id]);
    const healthz = `http://127.0.0.1:${project.appPort}/healthz`;
    let first: string | undefined;
    await eventually(async () => (first = await healthzNode(healthz)) !== undefined, 60_000);
    // The entrypoint's reset (and serve's own) ran before the node listened.
    assertEquals(await stateOf(project.sql, user.id), "offline", `first answer from ${first}`);
    const again = await login(wsUrl, user);
    try {
      assertEquals(again.reply.type, "welcome", JSON.stringify(again.reply));
    } finally {
      await again.client.close();
    }
  });
});

Deno.test("compose cluster: nginx balances, finds a node recreated at a new address, and stops with sockets open", async () => {
  await withProject(async (project) => {
    await project.up(["postgres", "node1", "node2", "lb"]);
    await project.healthy("lb");
    const lbWs = `ws://127.0.0.1:${project.lbPort}/ws`;
    const lbHealthz = `http://127.0.0.1:${project.lbPort}/healthz`;

    // Through nginx, one user on each node (round robin: a few logins are enough).
    const onNode = new Map<string, { client: Client; user: { id: number } }>();
    const extra: Client[] = [];
    for (let i = 0; i < 10 && onNode.size < 2; i++) {
      const session = await loggedIn(lbWs);
      const node = await project.nodeOf(session.user.id);
      if (onNode.has(node)) extra.push(session.client);
      else onNode.set(node, session);
    }
    await Promise.all(extra.map((c) => c.close()));
    const one = onNode.get("node1");
    const two = onNode.get("node2");
    assert(one && two, `nginx sent every login to ${[...onNode.keys()]}`);

    // node1 stops: its user gets 1001 and reads offline, node2's stays online and connected.
    const oldAddress = await project.address("node1");
    await project.compose(["stop", "node1"]);
    assertEquals((await one.client.closedWithin(10_000)).code, 1001);
    assertEquals(await stateOf(project.sql, one.user.id), "offline");
    assertEquals(await stateOf(project.sql, two.user.id), "online");
    assertEquals(two.client.raw.readyState, WebSocket.OPEN);

    // Recreated with a new address: a stand-in holds the old one, as another container would.
    const lbId = await project.id("lb");
    const lbStarted = await project.inspect(lbId, "{{.State.StartedAt}}");
    await project.run(`${project.name}-squatter`, [
      "--network",
      `${project.name}_default`,
      "--ip",
      oldAddress,
      "--entrypoint",
      "sleep",
      IMAGE,
      "600",
    ]);
    await project.compose([
      "--profile",
      "cluster",
      "up",
      "-d",
      "--no-deps",
      "--force-recreate",
      "node1",
    ]);
    assertNotEquals(await project.address("node1"), oldAddress);
    await project.healthy("node1");
    // Traffic reaches node1 again, through the same nginx, never restarted.
    await eventually(
      async () => (await healthzNode(lbHealthz)) === "node1",
      30_000,
      "node1 via nginx",
    );
    assertEquals(await project.inspect(lbId, "{{.State.StartedAt}}"), lbStarted);

    // nginx stops by itself within the grace period (10 s) though a WebSocket is open through
    // it: exit 0 from its graceful stop, not 137 from the SIGKILL that ends the grace period.
    await project.compose(["stop", "lb"]);
    assertEquals(await project.inspect(lbId, "{{.State.ExitCode}}"), "0", await project.logs(lbId));
    await two.client.closedWithin(10_000);
  });
});
