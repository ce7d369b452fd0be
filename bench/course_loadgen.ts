/**
 * @module A load-generator process for the course protocol (src/legacy/): the course's own
 * workload over TCP against Parley's LEGACY_TCP_PORT or against the course's C++ server itself.
 * It reads JSON lines on stdin: a `CourseRun` (connect, register when asked, log in; answered with
 * `{ready: true}`), then any number of `{startAt, window}` (send; answered with a `CourseResult`), on
 * the same connections and logins; end of input closes them. The bench steps the
 * processes' logins one after another, since the course server crashes on concurrent
 * registrations. Both ends of every pair live in this process, so latency needs no clock alignment.
 *
 * Requests are written as the course client writes them (one write each, the JSON text and a NUL),
 * and what comes back is split by the server's own splitter, so objects the course client would
 * have mangled by reading two in one `recv` still count here: a loss is a message that never came.
 *
 * The course has no reply to a chat message, so "in flight" counts messages a sender has sent and
 * its recipient has not yet received. A message not received within `lossAfterMs` is counted lost
 * and frees its slot (the course server drops requests that arrive merged in one read).
 */
import { Splitter } from "../src/legacy/framing.ts";

export interface CourseUser {
  /** Index in the workload (0..users-1); the id and password to log in with. */
  id: number;
  password: string;
}

export interface CourseRun {
  hostname: string;
  port: number;
  /** Users to log in; when `register` is set they are registered first and these are ignored. */
  users: CourseUser[];
  /** Register `count` users named `<prefix><n>` through the protocol (for the course server). */
  register?: { prefix: string; count: number; password: string };
  /** Logins in flight at once. */
  loginConcurrency: number;
  /** Pause between closing two connections at the end (the course server crashes on a burst). */
  closeGapMs: number;
  /** Pairs `[from, to]` as indexes into the users, each sending `perPair` messages. */
  pairs: [number, number][];
  perPair: number;
  /** Characters of padding per text, for a text of about 64 bytes with the tag. */
  padding: number;
  lossAfterMs: number;
  deadlineMs: number;
}

export interface CourseResult {
  sent: number;
  received: number;
  lost: number;
  duplicates: number;
  /** Send to receipt, milliseconds, one per received message. */
  latencies: number[];
  /** Wall-clock times of the first send and the last receipt. */
  firstSendAt: number;
  lastReceiptAt: number;
  /** Connections the server closed during the run (the course server crashes under pipelining). */
  closedByServer: number;
  timedOut: boolean;
  loginFailures: number;
  /** The first few login or registration failures, as the server answered. */
  failures: string[];
}

const encoder = new TextEncoder();
const wallClock = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

type Obj = Record<string, unknown>;

class Conn {
  #splitter = new Splitter({ maxObjectBytes: 1 << 22 });
  #waiters: ((o: Obj) => boolean)[] = [];
  closed = false;
  closedByServer = false;
  onObject: ((o: Obj) => void) | null = null;

  private constructor(readonly conn: Deno.TcpConn) {
    void this.#read();
  }

  static async open(hostname: string, port: number): Promise<Conn> {
    const conn = await Deno.connect({ hostname, port });
    conn.setNoDelay(true);
    return new Conn(conn);
  }

  async #read() {
    const buffer = new Uint8Array(256 * 1024);
    try {
      while (true) {
        const n = await this.conn.read(buffer);
        if (n === null) break;
        for (const piece of this.#splitter.push(buffer.subarray(0, n))) {
          if (piece.kind !== "object") continue;
          const o = piece.value;
          const i = this.#waiters.findIndex((w) => w(o));
          if (i >= 0) this.#waiters.splice(i, 1);
          else this.onObject?.(o);
        }
      }
      if (!this.closed) this.closedByServer = true;
    } catch {
      if (!this.closed) this.closedByServer = true;
    }
    this.closed = true;
  }

  /** The next object `match` accepts, or null after `ms`. */
  expect(match: (o: Obj) => boolean, ms: number): Promise<Obj | null> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        const i = this.#waiters.indexOf(waiter);
        if (i >= 0) this.#waiters.splice(i, 1);
        resolve(null);
      }, ms);
      const waiter = (o: Obj) => {
        if (!match(o)) return false;
        clearTimeout(timer);
        resolve(o);
        return true;
      };
      this.#waiters.push(waiter);
    });
  }

  async write(text: string): Promise<void> {
    const bytes = encoder.encode(text);
    for (let done = 0; done < bytes.length;) done += await this.conn.write(bytes.subarray(done));
  }

  /** One request as the course client sends it: the JSON text and a NUL, in one write. */
  send(request: Obj): Promise<void> {
    return this.write(`${JSON.stringify(request)}\0`);
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    try {
      this.conn.close();
    } catch {
      // Already closed.
    }
  }
}

/** Connects and logs every user in; returns what `traffic` needs. */
export async function prepare(run: CourseRun): Promise<{ users: CourseUser[]; conns: Conn[] }> {
  const failures: string[] = [];
  let loginFailures = 0;
  const conns: Conn[] = [];
  try {
    let users = run.users;
    if (run.register) {
      const { prefix, count, password } = run.register;
      users = [];
      // One connection, one request at a time, as the course client registers; the course server
      // crashes on a burst of connections opened and closed.
      const c = await Conn.open(run.hostname, run.port);
      try {
        for (let i = 0; i < count; i++) {
          const ack = c.expect((o) => o.msgid === 5, 10_000);
          await c.send({ msgid: 4, name: `${prefix}${i + 1}`, password });
          const reply = await ack;
          if (!reply || reply.errno !== 0) {
            throw new Error(`Registration failed: ${JSON.stringify(reply)}`);
          }
          users.push({ id: reply.id as number, password });
        }
      } finally {
        c.close();
      }
    }
    // Log in, a few at a time (Parley verifies a real password hash per login).
    const order = [...users.keys()];
    for (let i = 0; i < order.length; i += 20) {
      await Promise.all(
        order.slice(i, i + 20).map(async (index) => {
          const u = users[index];
          const c = await Conn.open(run.hostname, run.port);
          conns[index] = c;
          const ack = c.expect((o) => o.msgid === 2, 30_000);
          await c.send({ msgid: 1, id: u.id, password: u.password });
          const reply = await ack;
          if (!reply || reply.errno !== 0) {
            loginFailures++;
            if (failures.length < 5) failures.push(JSON.stringify(reply));
          }
        }),
      );
    }
    if (loginFailures > 0) {
      throw new Error(`${loginFailures} logins failed: ${failures.join("; ")}`);
    }
    // Parley pauses after a login ack before anything else is written; let the last ones pass.
    await sleep(200);
    return { users, conns };
  } catch (error) {
    for (const c of conns) c?.close();
    throw error;
  }
}

interface Pair {
  from: number;
  to: number;
  next: number;
  /** seq -> send time, of messages neither received nor given up on. */
  waiting: Map<number, number>;
  done: number;
  wake: (() => void) | null;
}

/** Sends from `startAt` (wall clock) and counts what arrives. */
export async function traffic(
  run: CourseRun,
  users: CourseUser[],
  conns: Conn[],
  startAt: number,
  window: number,
): Promise<CourseResult> {
  const tag = `c${crypto.randomUUID().slice(0, 8)}`;
  const pad = "x".repeat(run.padding);
  const latencies: number[] = [];
  let sent = 0, received = 0, lost = 0, duplicates = 0;
  let firstSendAt = 0, lastReceiptAt = 0;
  const pairs: Pair[] = run.pairs.map(([from, to]) => ({
    from,
    to,
    next: 0,
    waiting: new Map(),
    done: 0,
    wake: null,
  }));
  // A recipient may have several senders: find the pair by the sender's index in the text.
  const byKey = new Map<string, Pair>(pairs.map((p) => [`${p.from}`, p]));
  const total = pairs.length * run.perPair;
  let settled = 0;
  let allSettled!: () => void;
  const finished = new Promise<void>((resolve) => allSettled = resolve);
  const settle = (p: Pair) => {
    p.done++;
    settled++;
    p.wake?.();
    if (settled === total) allSettled();
  };
  for (const c of conns) {
    c.onObject = (o) => {
      const text = o.msg;
      if (typeof text !== "string" || !text.startsWith(tag)) return;
      const now = wallClock();
      const [, from, seq] = text.split(" ", 3);
      const p = byKey.get(from);
      const sentAt = p?.waiting.get(Number(seq));
      if (p === undefined || sentAt === undefined) {
        duplicates++;
        return;
      }
      p.waiting.delete(Number(seq));
      received++;
      latencies.push(now - sentAt);
      lastReceiptAt = now;
      settle(p);
    };
  }
  // Messages not received in time are counted lost, and free their slot.
  const reaper = setInterval(() => {
    const now = wallClock();
    for (const p of pairs) {
      for (const [seq, at] of p.waiting) {
        if (now - at < run.lossAfterMs) break;
        p.waiting.delete(seq);
        lost++;
        settle(p);
      }
    }
  }, 50);
  const wait = startAt - wallClock();
  if (wait > 0) await sleep(wait);
  firstSendAt = wallClock();
  const deadline = firstSendAt + run.deadlineMs;
  const sender = async (p: Pair) => {
    const c = conns[p.from];
    const from = users[p.from].id, to = users[p.to].id;
    while (p.next < run.perPair && !c.closed && wallClock() < deadline) {
      if (p.waiting.size >= window) {
        await new Promise<void>((resolve) => p.wake = resolve);
        p.wake = null;
        continue;
      }
      const seq = p.next++;
      p.waiting.set(seq, wallClock());
      sent++;
      try {
        await c.send({
          msgid: 6,
          id: from,
          from: `u${from}`,
          toid: to,
          msg: `${tag} ${p.from} ${seq} ${pad}`,
          time: "2026-01-01 00:00:00",
        });
      } catch {
        break;
      }
    }
    // What a closed connection or the deadline left unsent never comes.
    const unsent = run.perPair - p.next;
    for (let i = 0; i < unsent; i++) settle(p);
  };
  const timeout = sleep(run.deadlineMs + run.lossAfterMs + 1000).then(() => "timeout" as const);
  await Promise.all(pairs.map(sender));
  const outcome = await Promise.race([finished.then(() => "done" as const), timeout]);
  clearInterval(reaper);
  for (const p of pairs) lost += p.waiting.size;
  return {
    sent,
    received,
    lost: Math.min(lost, sent - received),
    duplicates,
    latencies,
    firstSendAt,
    lastReceiptAt,
    closedByServer: conns.filter((c) => c.closedByServer).length,
    timedOut: outcome === "timeout",
    loginFailures: 0,
    failures: [],
  };
}

if (import.meta.main) {
  let run: CourseRun | null = null;
  let ready: { users: CourseUser[]; conns: Conn[] } | null = null;
  const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream());
  let buffer = "";
  for await (const chunk of lines) {
    buffer += chunk;
    const parts = buffer.split("\n");
    buffer = parts.pop()!;
    for (const line of parts) {
      if (!line.trim()) continue;
      const command = JSON.parse(line);
      try {
        if (run === null) {
          run = command as CourseRun;
          ready = await prepare(run);
          console.log(JSON.stringify({ ready: true }));
        } else {
          const { startAt, window } = command;
          const result = await traffic(run, ready!.users, ready!.conns, startAt, window);
          console.log(JSON.stringify(result));
        }
      } catch (error) {
        console.log(JSON.stringify({ error: String(error) }));
        Deno.exit(1);
      }
    }
  }
  for (const c of ready?.conns ?? []) {
    c.close();
    if (run!.closeGapMs > 0) await sleep(run!.closeGapMs);
  }
  Deno.exit(0);
}
