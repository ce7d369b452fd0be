/**
 * @module The `course` scenario: the course's own workload over the course's TCP protocol (100
 * users, user i to user i+50, 20,000 messages, 1 and 8 in flight), against a Parley node's
 * LEGACY_TCP_PORT and, when the run names one (`--course-server HOST:PORT`), against that server
 * too in the same run: the course's C++ server, so that the ratio between them is one run's.
 *
 * Run alone against any course-protocol server (users are registered through the protocol):
 *
 *   deno run -A bench/course.ts HOST:PORT [--messages N] [--windows 1,8] [--pid SERVER_PID]
 */
import type { CourseResult, CourseRun, CourseUser } from "./course_loadgen.ts";
import { cpuMs, GENEROUS_LIMITS, startNode } from "./servers.ts";
import { freshDatabase, PASSWORD, seedUsers } from "./database.ts";
import type { BenchPostgres } from "./database.ts";
import { concat, perSec, spread, sum } from "./stats.ts";

const LOADGEN = new URL("./course_loadgen.ts", import.meta.url).pathname;

/** Load-generator processes; both ends of a pair share one. */
const PROCESSES = 2;
/** A message not received within this is counted lost. */
const LOSS_AFTER_MS = 5000;
const PADDING = 32;
const START_DELAY_MS = 300;

export interface CourseOptions {
  users: number;
  messages: number;
  windows: number[];
  deadlineMs: number;
}

const wallClock = () => performance.timeOrigin + performance.now();

/** One load-generator process: `prepare` connects and logs in, `start` runs and returns figures. */
class CourseLoadgen {
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #lines: AsyncIterator<string>;

  constructor() {
    this.#child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", LOADGEN],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#lines = lines(this.#child.stdout)[Symbol.asyncIterator]();
  }

  async #ask<T>(command: unknown): Promise<T> {
    await this.#writer.write(new TextEncoder().encode(JSON.stringify(command) + "\n"));
    const next = await this.#lines.next();
    if (next.done) throw new Error("The course load generator exited");
    const reply = JSON.parse(next.value);
    if (reply.error) throw new Error(`Course load generator failed: ${reply.error}`);
    return reply as T;
  }

  prepare(run: CourseRun): Promise<unknown> {
    return this.#ask(run);
  }

  start(startAt: number, window: number): Promise<CourseResult> {
    return this.#ask({ startAt, window });
  }

  async stop(): Promise<void> {
    await this.#writer.close().catch(() => {});
    const timer = setTimeout(() => {
      try {
        this.#child.kill("SIGKILL");
      } catch {
        // Already gone.
      }
    }, 5000);
    await this.#child.status;
    clearTimeout(timer);
  }
}

async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let buffer = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buffer += chunk;
    const parts = buffer.split("\n");
    buffer = parts.pop()!;
    for (const line of parts) if (line.trim()) yield line;
  }
}

export interface Target {
  hostname: string;
  port: number;
  /** Seeded users (Parley); none means register through the protocol (the course server). */
  users?: CourseUser[];
  /** The server's pid, for its CPU time. */
  pid?: number;
}

/**
 * The load-generator processes for one server: `prepare` connects and logs every user in (one
 * process after the other), `run` measures one window on those same logins, `stop` ends them.
 */
export class CourseFleet {
  #gens: CourseLoadgen[] = [];
  readonly #half: number;
  readonly #perPair: number;

  constructor(readonly target: Target, readonly o: CourseOptions) {
    this.#half = Math.floor(o.users / 2);
    this.#perPair = Math.floor(o.messages / this.#half);
  }

  async prepare(): Promise<void> {
    const { target } = this;
    const half = this.#half;
    const prefix = `c${crypto.randomUUID().slice(0, 6)}`;
    for (let k = 0; k < PROCESSES; k++) {
      // Process k holds pairs k, k + PROCESSES, ...: sender i and its recipient i + half.
      const mine = Array.from({ length: half }, (_, i) => i).filter((i) => i % PROCESSES === k);
      const users = target.users
        ? mine.flatMap((i) => [target.users![i], target.users![i + half]])
        : [];
      const gen = new CourseLoadgen();
      this.#gens.push(gen);
      // One process after the other, for the same reason as loginConcurrency.
      await gen.prepare({
        hostname: target.hostname,
        port: target.port,
        users,
        register: target.users
          ? undefined
          : { prefix: `${prefix}p${k}u`, count: mine.length * 2, password: "course-bench" },
        // The course server crashes on concurrent registrations and logins: one at a time there.
        loginConcurrency: target.users ? 20 : 1,
        closeGapMs: target.users ? 0 : 20,
        pairs: mine.map((_, j) => [2 * j, 2 * j + 1] as [number, number]),
        perPair: this.#perPair,
        padding: PADDING,
        lossAfterMs: LOSS_AFTER_MS,
        deadlineMs: this.o.deadlineMs,
      });
    }
  }

  /** One measured run at `window` in flight: figures merged across processes. */
  async run(window: number) {
    const pid = this.target.pid;
    const cpuBefore = pid ? await cpuMs(pid).catch(() => null) : null;
    const startAt = wallClock() + START_DELAY_MS;
    const results = await Promise.all(this.#gens.map((gen) => gen.start(startAt, window)));
    const cpuAfter = pid ? await cpuMs(pid).catch(() => null) : null;
    const first = Math.min(...results.map((r) => r.firstSendAt));
    const last = Math.max(...results.map((r) => r.lastReceiptAt));
    const received = sum(results.map((r) => r.received));
    return {
      msgsPerSec: perSec(received, last - first),
      ...spread(concat(results.map((r) => r.latencies))),
      sent: sum(results.map((r) => r.sent)),
      expected: this.#perPair * this.#half,
      received,
      lost: sum(results.map((r) => r.lost)),
      duplicates: sum(results.map((r) => r.duplicates)),
      closedByServer: sum(results.map((r) => r.closedByServer)),
      timedOut: results.some((r) => r.timedOut),
      elapsedMs: Math.round(last - first),
      serverCpuMs: cpuBefore !== null && cpuAfter !== null
        ? Math.round(cpuAfter - cpuBefore)
        : null,
    };
  }

  async stop(): Promise<void> {
    await Promise.all(this.#gens.map((gen) => gen.stop()));
  }
}

export function parseAddress(value: string): { hostname: string; port: number } {
  const match = value.match(/^(.+):(\d+)$/);
  if (!match) throw new Error(`Invalid course server "${value}": expected HOST:PORT`);
  return { hostname: match[1], port: Number(match[2]) };
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;

/**
 * The scenario: a Parley node with LEGACY_TCP_PORT on a fresh database, then (when given) the other
 * server, each window in turn, Parley first.
 */
export async function courseScenario(
  ctx: { pg: BenchPostgres; log: (line: string) => void; courseServer?: string },
  o: CourseOptions,
): Promise<(Record<string, unknown> & { name: string })[]> {
  const other = ctx.courseServer ? parseAddress(ctx.courseServer) : null;
  const db = await freshDatabase(ctx.pg, "course");
  try {
    const env = { ...GENEROUS_LIMITS, LEGACY_TCP_PORT: "0" };
    const node = await startNode(db.url, "bench-course", env);
    try {
      const line = await node.waitForLog((l) => l.event === "legacy.listening");
      const port = Number(line.port);
      const seeded = await seedUsers(db.sql, "c", o.users);
      const users = seeded.map((u) => ({ id: u.id, password: PASSWORD }));
      const entries = [];
      const parleyFleet = new CourseFleet({ hostname: "127.0.0.1", port, users, pid: node.pid }, o);
      const courseFleet = other ? new CourseFleet(other, o) : null;
      try {
        await parleyFleet.prepare();
        const failed = await courseFleet?.prepare().then(() => null, (error) => String(error));
        // Windows alternate between the two servers, so that both see about the same machine.
        for (const window of o.windows) {
          ctx.log(`course parley window ${window}: ${o.messages} messages`);
          const parley = await parleyFleet.run(window);
          let course = null;
          if (courseFleet) {
            ctx.log(`course ${ctx.courseServer} window ${window}: ${o.messages} messages`);
            course = failed !== null && failed !== undefined
              ? { error: failed }
              : await courseFleet.run(window).catch((error) => ({ error: String(error) }));
          }
          const courseRate = course && "msgsPerSec" in course ? course.msgsPerSec : null;
          entries.push({
            name: "course",
            window,
            users: o.users,
            messages: o.messages,
            parleyMsgsPerSec: parley.msgsPerSec,
            courseMsgsPerSec: courseRate,
            ratio: parley.msgsPerSec !== null && courseRate
              ? round3(parley.msgsPerSec / courseRate)
              : null,
            courseServer: ctx.courseServer ?? null,
            loadAverage: Deno.loadavg(),
            parley,
            course,
          });
        }
      } finally {
        await parleyFleet.stop();
        await courseFleet?.stop();
      }
      return entries;
    } finally {
      await node.stop(10_000);
    }
  } finally {
    await db.drop();
  }
}

if (import.meta.main) {
  const args = [...Deno.args];
  const address = args.shift();
  if (!address) {
    console.error("Usage: deno run -A bench/course.ts HOST:PORT [--messages N] [--windows 1,8]");
    Deno.exit(2);
  }
  const option = (name: string, fallback: string) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : fallback;
  };
  const o: CourseOptions = {
    users: 100,
    messages: Number(option("--messages", "20000")),
    windows: option("--windows", "1,8").split(",").map(Number),
    deadlineMs: 120_000,
  };
  const pid = option("--pid", "");
  const fleet = new CourseFleet(
    { ...parseAddress(address), pid: pid ? Number(pid) : undefined },
    o,
  );
  try {
    await fleet.prepare();
    for (const window of o.windows) {
      const result = await fleet.run(window);
      console.log(JSON.stringify({ window, loadAverage: Deno.loadavg(), ...result }));
    }
  } finally {
    await fleet.stop();
  }
}
