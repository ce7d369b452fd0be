/**
 * @module Real server processes for tests: `src/main.ts serve` on port 0, its JSON log lines kept,
 * its port read from the `http.listening` line, stopped with real signals.
 */

const MAIN = new URL("../../src/main.ts", import.meta.url).pathname;
const ROOT = new URL("../../", import.meta.url).pathname;

export interface ServerOptions {
  databaseUrl?: string;
  nodeId?: string;
  env?: Record<string, string>;
  /** The command and its arguments; `serve` by default. */
  args?: string[];
  /** Run this executable instead of `deno run -A src/main.ts` (the container entrypoint). */
  command?: { cmd: string; args: string[] };
}

export interface LogLine {
  event?: string;
  level?: string;
  [key: string]: unknown;
}

export class ServerProcess {
  readonly logs: LogLine[] = [];
  readonly text: string[] = [];
  port = 0;
  readonly status: Promise<Deno.CommandStatus>;
  #child: Deno.ChildProcess;
  #readers: Promise<void>;
  #waiters: { test: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];

  constructor(child: Deno.ChildProcess) {
    this.#child = child;
    this.#readers = Promise.all([this.#read(child.stdout), this.#read(child.stderr)]).then(
      () => {},
    );
    this.status = child.status;
  }

  get pid(): number {
    return this.#child.pid;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get wsUrl(): string {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  async #read(stream: ReadableStream<Uint8Array>) {
    const lines = stream.pipeThrough(new TextDecoderStream()).pipeThrough(new LineSplitter());
    for await (const line of lines) {
      this.text.push(line);
      if (Deno.env.get("PARLEY_TEST_VERBOSE")) console.error(`[${this.pid}] ${line}`);
      let parsed: LogLine;
      try {
        parsed = JSON.parse(line);
      } catch {
        continue;
      }
      if (typeof parsed !== "object" || parsed === null) continue;
      this.logs.push(parsed);
      this.#waiters = this.#waiters.filter((w) => {
        if (!w.test(parsed)) return true;
        w.resolve(parsed);
        return false;
      });
    }
  }

  /** The first log line (past or future) that passes `test`; rejects after `ms` or at exit. */
  waitForLog(test: (l: LogLine) => boolean, ms = 15_000): Promise<LogLine> {
    const seen = this.logs.find(test);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`No matching log line within ${ms} ms; output:\n${this.text.join("\n")}`));
      }, ms);
      const exited = this.status.then((s) => {
        cleanup();
        reject(
          new Error(
            `Server exited (${s.code}) before the log line; output:\n${this.text.join("\n")}`,
          ),
        );
      });
      const waiter = {
        test,
        resolve: (l: LogLine) => {
          cleanup();
          resolve(l);
        },
      };
      const cleanup = () => {
        clearTimeout(timer);
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        void exited;
      };
      this.#waiters.push(waiter);
    });
  }

  kill(signal: Deno.Signal): void {
    try {
      this.#child.kill(signal);
    } catch {
      // Already gone.
    }
  }

  /** Waits for the process to end and its output to be read. */
  async exited(): Promise<Deno.CommandStatus> {
    const status = await this.status;
    await this.#readers;
    return status;
  }

  /** Ends the process: SIGTERM, then SIGKILL if it is still there after `ms`. */
  async stop(ms = 10_000): Promise<Deno.CommandStatus> {
    this.kill("SIGTERM");
    const timer = setTimeout(() => this.kill("SIGKILL"), ms);
    try {
      return await this.exited();
    } finally {
      clearTimeout(timer);
    }
  }
}

class LineSplitter extends TransformStream<string, string> {
  constructor() {
    let buffer = "";
    super({
      transform(chunk, controller) {
        buffer += chunk;
        const parts = buffer.split("\n");
        buffer = parts.pop()!;
        for (const p of parts) controller.enqueue(p);
      },
      flush(controller) {
        if (buffer) controller.enqueue(buffer);
      },
    });
  }
}

/** Spawns a process without waiting for it to listen. */
export function spawnServer(options: ServerOptions = {}): ServerProcess {
  const env: Record<string, string> = {
    HOST: "127.0.0.1",
    PORT: "0",
    NODE_ID: options.nodeId ?? `test-${crypto.randomUUID().slice(0, 8)}`,
    LOG_LEVEL: "info",
    HEARTBEAT_MS: "200",
    NODE_TTL_MS: "3000",
    PRESENCE_GRACE_MS: "0",
    // Every test client comes from 127.0.0.1; tests of the throttle itself set their own limit.
    REGISTRATIONS_PER_MIN: "1000",
    ...(options.databaseUrl ? { DATABASE_URL: options.databaseUrl } : {}),
    ...options.env,
  };
  const { cmd, args } = options.command ??
    { cmd: Deno.execPath(), args: ["run", "-A", "--quiet", MAIN, ...(options.args ?? ["serve"])] };
  const child = new Deno.Command(cmd, {
    args,
    env,
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  return new ServerProcess(child);
}

/** A TCP port that was free a moment ago. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/**
 * Starts a server and waits until it listens: on the port it logs (PORT=0), or, for a fixed PORT,
 * until /healthz answers, which also works when LOG_LEVEL hides the line.
 */
export async function startServer(options: ServerOptions = {}): Promise<ServerProcess> {
  const server = spawnServer(options);
  const fixed = Number(options.env?.PORT ?? "0");
  try {
    if (fixed > 0) {
      server.port = fixed;
      await waitForHealth(server, 30_000);
      return server;
    }
    const line = await server.waitForLog((l) => l.event === "http.listening", 30_000);
    server.port = line.port as number;
    return server;
  } catch (error) {
    server.kill("SIGKILL");
    await server.exited();
    throw error;
  }
}

/** Runs `src/main.ts` with `args` to completion. */
export async function runMain(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", MAIN, ...args],
    env,
    cwd: ROOT,
    stdin: "null",
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

async function waitForHealth(server: ServerProcess, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  let exited = false;
  server.status.then(() => exited = true);
  while (Date.now() < deadline && !exited) {
    const ok = await fetch(`${server.url}/healthz`).then(async (r) => {
      await r.body?.cancel();
      return r.ok;
    }, () => false);
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(
    `Server on port ${server.port} did not become healthy; output:\n${server.text.join("\n")}`,
  );
}
