/**
 * @module A real NATS cluster for tests: three `nats-server` processes on free loopback ports,
 * routed to each other, each with its monitoring port, stopped (and restartable) one by one.
 */

import { freePort } from "./server.ts";

/** NATS_SERVER, else Debian's (in /usr/sbin, which a non-root PATH may lack), else from PATH. */
const BINARY = Deno.env.get("NATS_SERVER") ??
  (exists("/usr/sbin/nats-server") ? "/usr/sbin/nats-server" : "nats-server");

function exists(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

interface Member {
  name: string;
  port: number;
  clusterPort: number;
  monitorPort: number;
  child: Deno.ChildProcess | null;
  /** The server exited by itself (a port taken, a bad argument). */
  exited: boolean;
}

export class NatsCluster {
  readonly #members: Member[];

  private constructor(members: Member[]) {
    this.#members = members;
  }

  /**
   * Starts `size` servers and waits until each has a route to every other. A port found free may be
   * taken before a server binds it (any process's outgoing connection can draw it from the same
   * ephemeral range): a server that exits at start fails the attempt at once, and another attempt
   * runs on fresh ports.
   */
  static async start(size = 3, attempts = 5): Promise<NatsCluster> {
    for (let attempt = 1;; attempt++) {
      const members = Array.from({ length: size }, (_, i) => ({
        name: `parley-test-${i}-${crypto.randomUUID().slice(0, 6)}`,
        port: freePort(),
        clusterPort: freePort(),
        monitorPort: freePort(),
        child: null,
        exited: false,
      }));
      const cluster = new NatsCluster(members);
      try {
        for (let i = 0; i < size; i++) cluster.#spawn(i);
        await cluster.waitForRoutes();
        return cluster;
      } catch (error) {
        await cluster.stopAll();
        if (attempt >= attempts) throw error;
      }
    }
  }

  get size(): number {
    return this.#members.length;
  }

  /** `nats://127.0.0.1:<port>` of server `i`. */
  url(i: number): string {
    return `nats://127.0.0.1:${this.#members[i].port}`;
  }

  /** Every server, as BUS_URL takes them. */
  get busUrl(): string {
    return this.#members.map((_, i) => this.url(i)).join(",");
  }

  #spawn(i: number): void {
    const m = this.#members[i];
    const routes = this.#members.filter((o) => o !== m).map((o) =>
      `nats://127.0.0.1:${o.clusterPort}`
    );
    m.child = new Deno.Command(BINARY, {
      args: [
        "-a",
        "127.0.0.1",
        "-p",
        String(m.port),
        "-n",
        m.name,
        "-m",
        String(m.monitorPort),
        "--cluster_name",
        "parley-test",
        "--cluster",
        `nats://127.0.0.1:${m.clusterPort}`,
        "--routes",
        routes.join(","),
      ],
      stdin: "null",
      stdout: "null",
      stderr: Deno.env.get("PARLEY_TEST_VERBOSE") ? "inherit" : "null",
    }).spawn();
    const child = m.child;
    m.exited = false;
    child.status.then(() => {
      if (m.child === child) m.exited = true;
    });
  }

  async #monitor<T>(i: number, path: string): Promise<T | null> {
    try {
      const r = await fetch(`http://127.0.0.1:${this.#members[i].monitorPort}${path}`, {
        signal: AbortSignal.timeout(1000),
      });
      return r.ok ? await r.json() as T : (await r.body?.cancel(), null);
    } catch {
      return null;
    }
  }

  /** Waits until every running server has a route to every other running one. */
  async waitForRoutes(ms = 20_000): Promise<void> {
    const running = this.#members.map((m, i) => ({ m, i })).filter(({ m }) => m.child !== null);
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      const gone = running.find(({ m }) => m.exited);
      if (gone) throw new Error(`nats-server ${gone.i} exited at start (port taken?)`);
      const counts = await Promise.all(
        running.map(({ i }) => this.#monitor<{ num_routes: number }>(i, "/routez")),
      );
      if (counts.every((c) => c !== null && c.num_routes >= running.length - 1)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`NATS routes did not form within ${ms} ms`);
  }

  /** Client connection names (`parley:<NODE_ID>`) on server `i`. */
  async clientsOf(i: number): Promise<string[]> {
    const connz = await this.#monitor<{ connections?: { name?: string }[] }>(i, "/connz");
    return (connz?.connections ?? []).map((c) => c.name ?? "");
  }

  /** The index of the running server that node `nodeId` is connected to, or -1. */
  async serverOf(nodeId: string): Promise<number> {
    for (let i = 0; i < this.#members.length; i++) {
      if (this.#members[i].child && (await this.clientsOf(i)).includes(`parley:${nodeId}`)) {
        return i;
      }
    }
    return -1;
  }

  /** Kills server `i` at once (SIGKILL: no lame-duck goodbye to its clients). */
  async kill(i: number): Promise<void> {
    const child = this.#members[i].child;
    if (!child) return;
    this.#members[i].child = null;
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await child.status;
  }

  /** Starts server `i` again on its ports and waits for the cluster's routes. */
  async restart(i: number): Promise<void> {
    if (this.#members[i].child) return;
    this.#spawn(i);
    await this.waitForRoutes();
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.#members.map((_, i) => this.kill(i)));
  }
}

/** Runs `fn` with a fresh three-server cluster, stopped afterwards whatever happened. */
export async function withNats(fn: (cluster: NatsCluster) => Promise<void>): Promise<void> {
  const cluster = await NatsCluster.start(3);
  try {
    await fn(cluster);
  } finally {
    await cluster.stopAll();
  }
}
