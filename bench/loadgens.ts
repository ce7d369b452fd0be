/**
 * @module The bench's side of its load-generator processes: spawns them with a raised open-file
 * limit, sends commands as JSON lines, and aligns their clocks with the bench's so that latencies
 * measured across processes (a sender in one, its recipients in others) stay true.
 */
import {
  type Command,
  type ConnectCommand,
  type ConnectResult,
  type RunCommand,
  type RunResult,
  type SocketsResult,
  wallClock,
} from "./protocol.ts";
import { withOpenFileLimit } from "./servers.ts";

const LOADGEN = new URL("./loadgen.ts", import.meta.url).pathname;

/** Extra time a command may take past its own deadline before the bench gives up on it. */
const REPLY_GRACE_MS = 30_000;

type Pending = { resolve: (value: unknown) => void; reject: (error: Error) => void };

export class Loadgen {
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #pending = new Map<number, Pending>();
  #nextId = 1;
  #exited = false;
  readonly status: Promise<Deno.CommandStatus>;

  private constructor(child: Deno.ChildProcess) {
    this.#child = child;
    this.#writer = child.stdin.getWriter();
    this.status = child.status.then((status) => {
      this.#exited = true;
      for (const p of this.#pending.values()) {
        p.reject(new Error(`Load generator ${child.pid} exited with code ${status.code}`));
      }
      this.#pending.clear();
      return status;
    });
    void this.#read(child.stdout);
  }

  static spawn(): Loadgen {
    const child = new Deno.Command("sh", {
      args: withOpenFileLimit([Deno.execPath(), "run", "-A", "--quiet", LOADGEN]),
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    return new Loadgen(child);
  }

  get pid(): number {
    return this.#child.pid;
  }

  async #read(stdout: ReadableStream<Uint8Array>) {
    let buffer = "";
    for await (const chunk of stdout.pipeThrough(new TextDecoderStream())) {
      buffer += chunk;
      const lines = buffer.split("\n");
      buffer = lines.pop()!;
      for (const line of lines) {
        if (!line.trim()) continue;
        const { id, result, error } = JSON.parse(line);
        const pending = this.#pending.get(id);
        if (!pending) continue;
        this.#pending.delete(id);
        if (error !== undefined) pending.reject(new Error(`Load generator failed: ${error}`));
        else pending.resolve(result);
      }
    }
  }

  /** Sends a command; rejects when it is not answered within `timeoutMs`. */
  request<T>(command: Command, timeoutMs: number): Promise<T> {
    if (this.#exited) return Promise.reject(new Error("The load generator has exited"));
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`Load generator ${this.pid} did not answer "${command.cmd}" in time`));
      }, timeoutMs);
      this.#pending.set(id, {
        resolve: (value) => {
          clearTimeout(timer);
          resolve(value as T);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      const line = new TextEncoder().encode(JSON.stringify({ id, ...command }) + "\n");
      this.#writer.write(line).catch((error) => {
        this.#pending.delete(id);
        clearTimeout(timer);
        reject(error);
      });
    });
  }

  /**
   * Finds this process's clock offset from the bench's: of several round trips, the shortest
   * bounds the error by half its length (well under a millisecond over a local pipe).
   */
  async syncClock(): Promise<number> {
    let best = { rtt: Infinity, offset: 0 };
    for (let i = 0; i < 9; i++) {
      const before = wallClock();
      const remote = await this.request<number>({ cmd: "now" }, 5000);
      const after = wallClock();
      if (after - before < best.rtt) {
        best = { rtt: after - before, offset: remote - (before + after) / 2 };
      }
    }
    await this.request({ cmd: "offset", ms: best.offset }, 5000);
    return best.rtt / 2;
  }

  connect(command: Omit<ConnectCommand, "cmd">): Promise<ConnectResult> {
    return this.request({ cmd: "connect", ...command }, command.deadlineMs + REPLY_GRACE_MS);
  }

  run(command: Omit<RunCommand, "cmd">): Promise<RunResult> {
    return this.request({ cmd: "run", ...command }, command.deadlineMs + REPLY_GRACE_MS);
  }

  closeAll(deadlineMs: number): Promise<SocketsResult> {
    return this.request({ cmd: "closeAll", deadlineMs }, deadlineMs + REPLY_GRACE_MS);
  }

  waitClosed(deadlineMs: number, url?: string): Promise<SocketsResult> {
    return this.request({ cmd: "waitClosed", deadlineMs, url }, deadlineMs + REPLY_GRACE_MS);
  }

  /** Asks the process to exit, and kills it if it has not within a few seconds. */
  async stop(): Promise<void> {
    if (!this.#exited) {
      await this.request({ cmd: "exit" }, 2000).catch(() => {});
      await this.#writer.close().catch(() => {});
    }
    const timer = setTimeout(() => {
      try {
        this.#child.kill("SIGKILL");
      } catch {
        // Already gone.
      }
    }, 5000);
    await this.status;
    clearTimeout(timer);
  }
}

/** Several load generators started together, clocks aligned; `stop` ends every one. */
export class LoadgenPool {
  private constructor(readonly all: Loadgen[], readonly clockErrorMs: number) {}

  static async start(count: number): Promise<LoadgenPool> {
    const all = Array.from({ length: Math.max(1, count) }, () => Loadgen.spawn());
    try {
      const errors = await Promise.all(all.map((l) => l.syncClock()));
      return new LoadgenPool(all, Math.max(...errors));
    } catch (error) {
      await Promise.all(all.map((l) => l.stop()));
      throw error;
    }
  }

  get size(): number {
    return this.all.length;
  }

  async closeAll(deadlineMs = 10_000): Promise<SocketsResult[]> {
    return await Promise.all(this.all.map((l) => l.closeAll(deadlineMs)));
  }

  async stop(): Promise<void> {
    await Promise.all(this.all.map((l) => l.stop()));
  }
}
