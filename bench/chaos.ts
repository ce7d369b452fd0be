/**
 * @module `deno task chaos [--seconds N] [--seed S] [--pairs P] [--out PATH]`: three Parley nodes
 * on one PostgreSQL, pairs of users chatting across them with clientIds and acks, and faults drawn
 * from the seed one after another: SIGKILL and restart, SIGTERM and restart, SIGSTOP for seconds,
 * a PostgreSQL restart, a node's database connections cut at a proxy. Then the checker: every
 * message answered `sent` reached its recipient (duplicate deliveries counted), nothing arrived
 * that was never sent, no retry was stored twice, every user reads offline once all clients are
 * gone, and no node died except by the run's own signals. Writes a JSON report and exits 1 on any
 * breach (2 on bad arguments).
 *
 * It speaks frames that mean the same in protocol versions 1 and 2 (`send` with a clientId,
 * `ack {ids}`, messages identified by id and clientId). When messages carry a `seq` (version 2), it
 * also checks that each conversation's seqs are gapless and that each socket got them in order.
 */
import { type ProvidedPostgres, providePostgres } from "../tests/support/postgres.ts";
import { type ServerProcess, startServer } from "../tests/support/server.ts";
import { TcpProxy } from "../tests/support/tcp_proxy.ts";
import { sqlClient } from "../tests/support/context.ts";

const USAGE =
  "Usage: deno task chaos [--seconds N] [--seed S] [--pairs P] [--out PATH] (defaults: 60 s, a random seed, 8 pairs, bench/results/chaos-<time>.json)";

export interface Options {
  seconds: number;
  seed: number;
  pairs: number;
  out: string | null;
}

export function parseArgs(args: readonly string[]): Options {
  const options: Options = {
    seconds: 60,
    seed: Math.floor(Math.random() * 2 ** 31),
    pairs: 8,
    out: null,
  };
  const list = args.filter((a) => a !== "--");
  for (let i = 0; i < list.length; i++) {
    const [flag, value] = [list[i], list[i + 1]];
    const whole = (min: number) => {
      const n = Number(value);
      if (!Number.isInteger(n) || n < min) {
        throw new Error(
          `Invalid ${flag} "${value ?? ""}": expected a whole number of at least ${min}`,
        );
      }
      i++;
      return n;
    };
    if (flag === "--seconds") options.seconds = whole(5);
    else if (flag === "--seed") options.seed = whole(0);
    else if (flag === "--pairs") options.pairs = whole(1);
    else if (flag === "--out" && value) {
      options.out = value;
      i++;
    } else throw new Error(`Unknown argument "${flag}"\n${USAGE}`);
  }
  return options;
}

/** mulberry32: a small seeded generator, so that a seed replays the same draw of faults. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The nodes' settings: short leases, so that a frozen node is reaped within a fault. */
const NODE_ENV: Record<string, string> = {
  LOG_LEVEL: "info",
  HEARTBEAT_MS: "500",
  NODE_TTL_MS: "4000",
  PRESENCE_GRACE_MS: "1000",
  SHUTDOWN_TIMEOUT_MS: "8000",
  IDLE_TIMEOUT_MS: "10000",
  RATE_LIMIT_PER_SEC: "1000",
  RATE_LIMIT_BURST: "1000",
  REGISTRATIONS_PER_MIN: "1000",
  LOGIN_FAILURES_PER_MIN: "1000",
};

/** How long a client waits for an answer before it gives up on the socket (a frozen node). */
const REPLY_DEADLINE_MS = 5000;

// ---------------------------------------------------------------------------------------------
// Nodes

class Node {
  process: ServerProcess | null = null;
  /** Set while the run itself ends or freezes this node: an exit now is not a death. */
  expectExit = false;
  up = false;
  readonly deaths: { at: number; code: number; signal: string | null }[] = [];
  errorLines: string[] = [];
  readonly errorEvents: Record<string, number> = {};
  starts = 0;

  constructor(readonly id: string, readonly proxy: TcpProxy, readonly databaseUrl: string) {}

  get wsUrl(): string | null {
    return this.up && this.process ? this.process.wsUrl : null;
  }

  async start(t0: number): Promise<void> {
    const process = await startServer({
      nodeId: this.id,
      databaseUrl: this.proxy.wrap(this.databaseUrl),
      env: NODE_ENV,
    });
    this.starts++;
    this.process = process;
    this.expectExit = false;
    this.up = true;
    process.status.then((status) => {
      this.up = false;
      this.#collectErrors(process);
      if (!this.expectExit) {
        this.deaths.push({ at: Date.now() - t0, code: status.code, signal: status.signal });
      }
    });
  }

  #collectErrors(process: ServerProcess) {
    for (const line of process.logs) {
      if (line.level !== "error") continue;
      const event = String(line.event);
      this.errorEvents[event] = (this.errorEvents[event] ?? 0) + 1;
      // The first of each kind, for the report.
      if (this.errorEvents[event] === 1) this.errorLines.push(JSON.stringify(line).slice(0, 600));
    }
  }

  signal(signal: Deno.Signal): void {
    if (signal !== "SIGSTOP" && signal !== "SIGCONT") {
      this.expectExit = true;
      this.up = false;
    }
    this.process?.kill(signal);
  }

  async exited(): Promise<Deno.CommandStatus | null> {
    return this.process ? await this.process.exited() : null;
  }

  /** Ends the node at the close of the run, by SIGTERM; returns its exit code. */
  async stop(): Promise<number | null> {
    if (!this.process) return null;
    this.signal("SIGTERM");
    const timer = setTimeout(() => this.process?.kill("SIGKILL"), 15_000);
    const status = await this.process.exited();
    clearTimeout(timer);
    return status.code;
  }
}

// ---------------------------------------------------------------------------------------------
// Users

type Frame = Record<string, unknown> & { type: string };
/**
 * An event as one socket received it: "sent", "late sent" (after the client gave up on it),
 * "resent" (the answer to a send first made on an earlier socket), "push", "echo" (own message
 * pushed).
 */
interface SeqFrame {
  seq: number;
  kind: "sent" | "late sent" | "resent" | "push" | "echo";
}
interface Msg {
  id: number;
  seq?: number;
  from: { id: number };
  to: { user?: number; group?: number };
  text: string;
  clientId?: string;
}

class ChatUser {
  id = 0;
  token: string | null = null;
  partner!: ChatUser;
  /** clientId → message id, for each send answered `sent`. */
  readonly sent = new Map<string, number>();
  /** clientId → text, for each send ever attempted. */
  readonly attempted = new Map<string, string>();
  /** Sends not yet answered `sent`, oldest first; each is retried with its clientId. */
  readonly outstanding: string[] = [];
  /** message id → how many times it arrived (as a push). */
  readonly received = new Map<number, number>();
  readonly receivedMsgs = new Map<number, Msg>();
  /**
   * Per socket, the conversation's events in arrival order (checked only when messages carry
   * seq), each with how it came.
   */
  readonly sockets: SeqFrame[][] = [];
  /** clientId → the socket (its index in `sockets`) the send was first made on. */
  readonly firstAskedOn = new Map<string, number>();
  readonly errors: Record<string, number> = {};
  readonly closes: Record<string, number> = {};
  logins = 0;
  #counter = 0;
  #sending = true;
  #stopped = false;
  #ws: WebSocket | null = null;
  #refs = new Map<string, (f: Frame) => void>();
  #nextRef = 1;

  constructor(
    readonly name: string,
    readonly password: string,
    private readonly nodes: Node[],
    private readonly random: () => number,
  ) {}

  #count(where: Record<string, number>, key: string) {
    where[key] = (where[key] ?? 0) + 1;
  }

  /** Stops making new messages; outstanding ones are still retried until answered. */
  stopSending(): void {
    this.#sending = false;
  }

  get settled(): boolean {
    return this.outstanding.length === 0;
  }

  stop(): void {
    this.#stopped = true;
    try {
      this.#ws?.close(1000);
    } catch {
      // Already closed.
    }
  }

  /** Connects, logs in, chats and reconnects until stopped. */
  async run(): Promise<void> {
    while (!this.#stopped) {
      const live = this.nodes.map((n) => n.wsUrl).filter((u): u is string => u !== null);
      if (live.length === 0) {
        await sleep(100);
        continue;
      }
      const url = live[Math.floor(this.random() * live.length)];
      try {
        await this.#session(url);
      } catch (error) {
        this.#count(this.errors, `client:${error instanceof Error ? error.message : error}`);
      }
      if (!this.#stopped) await sleep(50 + this.random() * 200);
    }
  }

  async #session(url: string): Promise<void> {
    const ws = new WebSocket(url);
    this.#ws = ws;
    const frames: SeqFrame[] = [];
    // This socket's index in `sockets`, where it goes once open.
    const socket = this.sockets.length;
    const record = (seq: unknown, kind: SeqFrame["kind"]) => {
      if (typeof seq === "number") frames.push({ seq, kind });
    };
    const closed = new Promise<CloseEvent>((resolve) =>
      ws.addEventListener("close", (e) => resolve(e))
    );
    ws.addEventListener("error", () => {});
    ws.addEventListener("message", (e) => {
      let frame: Frame;
      try {
        frame = JSON.parse(String(e.data));
      } catch {
        this.#count(this.errors, "bad_json_from_server");
        return;
      }
      if (frame.type === "sent") {
        // A `sent` counts for the order where it arrived: the code awaiting it runs only after
        // frames that came right behind it may have been handled. So does one that came after
        // the client gave up waiting for it (its ref is gone): the server wrote it to this
        // socket, in its place among the conversation's events. The answer to a send retried
        // from an earlier socket names the message stored the first time, and is marked so.
        const m = frame.message as Msg;
        const asked = this.firstAskedOn.get(m.clientId ?? "");
        record(
          m.seq,
          asked !== undefined && asked !== socket
            ? "resent"
            : this.#refs.has(frame.ref as string)
            ? "sent"
            : "late sent",
        );
      }
      if (typeof frame.ref === "string" && this.#refs.has(frame.ref)) {
        const resolve = this.#refs.get(frame.ref)!;
        this.#refs.delete(frame.ref);
        resolve(frame);
        return;
      }
      if (frame.type === "message") {
        const m = frame.message as Msg;
        // Its own message pushed to an older socket of the same user (PROTOCOL.md: the sender's
        // other online devices get it too): not a delivery to the partner.
        if (m.from.id === this.id) {
          this.#count(this.errors, "info:own_echo");
          // Still an event of the conversation on this socket (a catch-up replays the user's own
          // messages after the device's cursor too): it counts for the order.
          record(m.seq, "echo");
          return;
        }
        this.received.set(m.id, (this.received.get(m.id) ?? 0) + 1);
        this.receivedMsgs.set(m.id, m);
        record(m.seq, "push");
        try {
          ws.send(JSON.stringify({ type: "ack", ids: [m.id] }));
        } catch {
          // The socket is closing; the message comes again at the next login.
        }
      } else if (frame.type === "error") {
        this.#count(this.errors, `push:${frame.code}`);
      }
    });
    const opened = await Promise.race([
      new Promise<boolean>((resolve) => ws.addEventListener("open", () => resolve(true))),
      closed.then(() => false),
      sleep(REPLY_DEADLINE_MS).then(() => false),
    ]);
    if (!opened) {
      this.#count(this.closes, "connect_failed");
      ws.close();
      return;
    }
    this.sockets.push(frames);
    const request = (frame: Frame): Promise<Frame | null> => {
      const ref = `r${this.#nextRef++}`;
      const reply = new Promise<Frame | null>((resolve) => {
        this.#refs.set(ref, resolve);
        closed.then(() => resolve(null));
        sleep(REPLY_DEADLINE_MS).then(() => resolve(null));
      });
      try {
        ws.send(JSON.stringify({ ...frame, ref }));
      } catch {
        return Promise.resolve(null);
      }
      return reply.finally(() => this.#refs.delete(ref));
    };
    const login = this.token
      ? { type: "login", token: this.token }
      : { type: "login", name: this.name, password: this.password };
    const welcome = await request(login);
    if (welcome?.type !== "welcome") {
      this.#count(this.errors, welcome ? `login:${welcome.code}` : "login:no_answer");
      ws.close();
      const event = await closed;
      this.#count(this.closes, String(event.code));
      return;
    }
    this.logins++;
    this.token = welcome.token as string;
    this.id = (welcome.user as { id: number }).id;
    let alive = true;
    closed.then(() => alive = false);
    while (alive && !this.#stopped) {
      if (this.outstanding.length === 0) {
        if (!this.#sending) {
          await Promise.race([closed, sleep(100)]);
          continue;
        }
        const clientId = `${this.name}-${++this.#counter}`;
        this.attempted.set(clientId, `m ${clientId}`);
        this.outstanding.push(clientId);
      }
      const clientId = this.outstanding[0];
      if (!this.firstAskedOn.has(clientId)) this.firstAskedOn.set(clientId, socket);
      const reply = await request({
        type: "send",
        to: { user: this.partner.id },
        text: this.attempted.get(clientId)!,
        clientId,
      });
      if (reply?.type === "sent") {
        const m = reply.message as Msg;
        const before = this.sent.get(clientId);
        if (before !== undefined && before !== m.id) this.#count(this.errors, "clientId_two_ids");
        this.sent.set(clientId, m.id);
        this.outstanding.shift();
        await Promise.race([closed, sleep(20 + this.random() * 180)]);
      } else if (reply === null) {
        // No answer in time, or the socket closed: start afresh on a node that answers.
        if (alive) this.#count(this.errors, "send:no_answer");
        break;
      } else {
        this.#count(this.errors, `send:${reply.code}`);
        await Promise.race([closed, sleep(200)]);
      }
    }
    if (alive) ws.close(1000);
    const event = await closed;
    this.#count(this.closes, String(event.code));
  }
}

// ---------------------------------------------------------------------------------------------
// Faults

interface Fault {
  at: number;
  kind: string;
  node?: string;
  ms?: number;
  note?: string;
}

async function injectFaults(
  nodes: Node[],
  pg: ProvidedPostgres,
  random: () => number,
  until: number,
  t0: number,
  faults: Fault[],
  stop: AbortSignal,
): Promise<void> {
  const kinds = ["sigkill", "sigterm", "sigstop", "cut", ...(pg.restart ? ["pg_restart"] : [])];
  const between = (lo: number, hi: number) => Math.round(lo + random() * (hi - lo));
  while (Date.now() < until && !stop.aborted) {
    await sleep(between(2000, 6000));
    if (Date.now() >= until || stop.aborted) break;
    const kind = kinds[Math.floor(random() * kinds.length)];
    const node = nodes[Math.floor(random() * nodes.length)];
    const fault: Fault = { at: Date.now() - t0, kind };
    faults.push(fault);
    const started = Date.now();
    try {
      switch (kind) {
        case "sigkill":
        case "sigterm": {
          fault.node = node.id;
          node.signal(kind === "sigkill" ? "SIGKILL" : "SIGTERM");
          const status = await node.exited();
          if (kind === "sigterm" && status?.code !== 0) {
            fault.note = `drain exited with code ${status?.code} signal ${status?.signal}`;
          }
          await sleep(between(200, 1500));
          await node.start(t0);
          break;
        }
        case "sigstop": {
          fault.node = node.id;
          node.signal("SIGSTOP");
          await sleep(between(1000, 5000));
          node.signal("SIGCONT");
          break;
        }
        case "cut":
          fault.node = node.id;
          node.proxy.resetAll();
          break;
        case "pg_restart":
          await pg.restart!();
          break;
      }
    } catch (error) {
      fault.note = `fault failed: ${error instanceof Error ? error.message : error}`;
    }
    fault.ms = Date.now() - started;
  }
}

// ---------------------------------------------------------------------------------------------
// The run

export interface Report {
  seed: number;
  seconds: number;
  pairs: number;
  startedAt: string;
  load: string;
  faults: Fault[];
  faultCounts: Record<string, number>;
  sent: number;
  delivered: number;
  lost: { clientId: string; id: number; to: number }[];
  duplicateDeliveries: number;
  phantoms: unknown[];
  storedTwice: number;
  unsettledSends: number;
  seqChecked: boolean;
  seqBreaches: string[];
  /**
   * Answers to sends retried from an earlier socket whose seq that user's earlier sockets had
   * passed already: dropped by the order check as events applied before.
   */
  resentApplied: number;
  logins: number;
  clientErrors: Record<string, number>;
  closeCodes: Record<string, number>;
  onlineAtEnd: number[];
  deaths: Record<string, { at: number; code: number; signal: string | null }[]>;
  finalExitCodes: Record<string, number | null>;
  /** Error log lines by event, per node; `ws.internal` is a request answered `internal`. */
  nodeErrorEvents: Record<string, Record<string, number>>;
  nodeErrorLines: Record<string, string[]>;
  settleMs: number;
  ok: boolean;
  breaches: string[];
}

function merge(into: Record<string, number>, from: Record<string, number>) {
  for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
}

/** Runs the chaos; `stop` ends the faults early, and the run settles and checks as usual. */
export async function runChaos(
  options: Options,
  log: (l: string) => void,
  stop: AbortSignal = new AbortController().signal,
): Promise<Report> {
  const random = rng(options.seed);
  const load = await Deno.readTextFile("/proc/loadavg").catch(() => "");
  const pg = await providePostgres(log);
  const stack: (() => Promise<unknown>)[] = [() => pg.stop()];
  try {
    const admin = sqlClient(pg.url);
    const dbName = `parley_chaos_${options.seed}_${Date.now().toString(36)}`;
    await admin`create database ${admin(dbName)}`;
    await admin.end({ timeout: 5 });
    const u = new URL(pg.url);
    u.pathname = `/${dbName}`;
    const databaseUrl = u.toString();
    const target = { hostname: u.hostname, port: Number(u.port || 5432) };
    const t0 = Date.now();
    const nodes = ["chaos-1", "chaos-2", "chaos-3"].map((id) => {
      const proxy = TcpProxy.start(target);
      stack.push(() => proxy.close());
      return new Node(id, proxy, databaseUrl);
    });
    // The first node migrates; the others start beside it.
    await nodes[0].start(t0);
    await Promise.all(nodes.slice(1).map((n) => n.start(t0)));
    stack.push(() => Promise.all(nodes.map((n) => n.stop())));

    const users: ChatUser[] = [];
    for (let i = 0; i < options.pairs * 2; i++) {
      const name = `c${options.seed % 100000}_${Date.now().toString(36)}_${i}`;
      const user = new ChatUser(name, `pw-${crypto.randomUUID()}`, nodes, random);
      const ws = new WebSocket(nodes[i % 3].wsUrl!);
      await new Promise((r) => ws.addEventListener("open", r, { once: true }));
      const reply = new Promise<Frame>((r) =>
        ws.addEventListener("message", (e) => r(JSON.parse(String(e.data))), { once: true })
      );
      ws.send(JSON.stringify({ type: "register", name, password: user.password }));
      const registered = await reply;
      if (registered.type !== "registered") {
        throw new Error(`register failed: ${JSON.stringify(registered)}`);
      }
      user.id = (registered.user as { id: number }).id;
      ws.close();
      users.push(user);
    }
    for (let i = 0; i < users.length; i += 2) {
      users[i].partner = users[i + 1];
      users[i + 1].partner = users[i];
    }
    log(`chaos: seed ${options.seed}, ${options.seconds} s, ${users.length} users on 3 nodes`);
    const running = users.map((u) => u.run());

    const faults: Fault[] = [];
    const until = Date.now() + options.seconds * 1000;
    await injectFaults(nodes, pg, random, until, t0, faults, stop);
    log(`chaos: ${faults.length} faults done; settling`);

    // Every node back up and serving; then no new messages, and outstanding ones answered.
    for (const node of nodes) if (!node.up) await node.start(t0);
    for (const u of users) u.stopSending();
    const settleStart = Date.now();
    const settleDeadline = settleStart + 90_000;
    const allDelivered = () =>
      users.every((u) => u.settled) &&
      users.every((u) => [...u.sent.values()].every((id) => u.partner.received.has(id)));
    while (Date.now() < settleDeadline && !allDelivered()) await sleep(200);
    const settleMs = Date.now() - settleStart;

    for (const u of users) u.stop();
    await Promise.all(running);

    // Every user reads offline once all clients are gone (closes end sessions at once; a session
    // on a node that died is reaped through its lock or its lease).
    const check = sqlClient(databaseUrl);
    let onlineAtEnd: number[] = [];
    const offlineDeadline = Date.now() + 30_000;
    do {
      onlineAtEnd = (await check<{ id: number }[]>`
        select id from user_state where state = 'online' and id = any(${
        users.map((u) => u.id)
      }::bigint[])`).map((r) => r.id);
      if (onlineAtEnd.length > 0) await sleep(200);
    } while (onlineAtEnd.length > 0 && Date.now() < offlineDeadline);
    await check.end({ timeout: 5 });

    const finalExitCodes: Record<string, number | null> = {};
    for (const node of nodes) finalExitCodes[node.id] = await node.stop();
    stack.pop();

    // The checker.
    const lost: Report["lost"] = [];
    const phantoms: unknown[] = [];
    let sent = 0;
    let delivered = 0;
    let duplicateDeliveries = 0;
    let storedTwice = 0;
    const clientErrors: Record<string, number> = {};
    const closeCodes: Record<string, number> = {};
    for (const u of users) {
      merge(clientErrors, u.errors);
      merge(closeCodes, u.closes);
      for (const [clientId, id] of u.sent) {
        sent++;
        if (u.partner.received.has(id)) delivered++;
        else lost.push({ clientId, id, to: u.partner.id });
      }
      const ids = new Map<string, Set<number>>();
      for (const [id, count] of u.received) {
        duplicateDeliveries += count - 1;
        const m = u.receivedMsgs.get(id)!;
        const from = u.partner;
        const clientId = m.clientId ?? "";
        const expectedId = from.sent.get(clientId);
        const textOk = from.attempted.get(clientId) === m.text;
        // A message answered `sent` must carry that id; one whose `sent` never came (the socket
        // went first) must at least be one the sender attempted.
        if (m.from.id !== from.id || !textOk || (expectedId !== undefined && expectedId !== id)) {
          phantoms.push(m);
        }
        const set = ids.get(clientId) ?? new Set();
        set.add(id);
        ids.set(clientId, set);
      }
      for (const set of ids.values()) if (set.size > 1) storedTwice += set.size - 1;
    }
    const unsettledSends = users.reduce((n, u) => n + u.outstanding.length, 0);

    // Version 2: per-conversation seq gapless, and in order on every socket.
    const seqBreaches: string[] = [];
    let resentApplied = 0;
    const allMsgs = users.flatMap((u) => [...u.receivedMsgs.values()]);
    const seqChecked = allMsgs.length > 0 && allMsgs.every((m) => typeof m.seq === "number");
    if (seqChecked) {
      for (let i = 0; i < users.length; i += 2) {
        const [a, b] = [users[i], users[i + 1]];
        const seqs = new Set<number>();
        for (const m of [...a.receivedMsgs.values(), ...b.receivedMsgs.values()]) seqs.add(m.seq!);
        const sorted = [...seqs].sort((x, y) => x - y);
        if (sorted.some((s, k) => s !== k + 1)) {
          seqBreaches.push(`${a.name}/${b.name}: seqs not 1..${sorted.length}`);
        }
      }
      users.forEach((u, i) => {
        // Who wrote each seq of u's conversation, to say whose event a gap skipped.
        const partner = users[i ^ 1];
        const senderOf = new Map<number, string>();
        for (const m of [...u.receivedMsgs.values(), ...partner.receivedMsgs.values()]) {
          senderOf.set(m.seq!, m.from.id === u.id ? "own" : "the partner's");
        }
        // The highest seq this user's sockets received before the one at hand. An answer to a
        // send retried from an earlier socket names the message stored the first time, at its
        // seq, which may lie before this socket's starting point: an event the device applied
        // already, dropped as a client does (PROTOCOL.md), not this socket's first.
        let applied = 0;
        for (const frames of u.sockets) {
          let last = 0;
          let lastKind = "";
          frames.forEach(({ seq: s, kind }, at) => {
            if (kind === "resent" && s <= applied) {
              resentApplied++;
              return;
            }
            if (s <= last) return; // a duplicate, dropped as a client does
            if (last !== 0 && s !== last + 1) {
              const skipped = Array.from({ length: s - last - 1 }, (_, k) => last + 1 + k)
                .map((q) => `${q} (${senderOf.get(q) ?? "unknown"})`);
              seqBreaches.push(
                `${u.name}: seq ${s} (${kind}, frame ${
                  at + 1
                } of ${frames.length}) after ${last} (${lastKind}) on one socket, skipping ${
                  skipped.join(", ")
                }`,
              );
            }
            last = s;
            lastKind = kind;
          });
          for (const { seq } of frames) applied = Math.max(applied, seq);
        }
      });
    }

    const deaths: Report["deaths"] = {};
    const nodeErrorLines: Report["nodeErrorLines"] = {};
    const nodeErrorEvents: Report["nodeErrorEvents"] = {};
    for (const node of nodes) {
      deaths[node.id] = node.deaths;
      nodeErrorLines[node.id] = node.errorLines;
      nodeErrorEvents[node.id] = node.errorEvents;
    }
    const faultCounts: Record<string, number> = {};
    for (const f of faults) faultCounts[f.kind] = (faultCounts[f.kind] ?? 0) + 1;

    const breaches: string[] = [];
    if (lost.length > 0) breaches.push(`${lost.length} messages answered sent never arrived`);
    if (phantoms.length > 0) breaches.push(`${phantoms.length} messages arrived never sent`);
    if (storedTwice > 0) breaches.push(`${storedTwice} retries stored twice`);
    if (unsettledSends > 0) breaches.push(`${unsettledSends} sends never answered sent`);
    if (onlineAtEnd.length > 0) breaches.push(`${onlineAtEnd.length} users online at the end`);
    if (nodes.some((n) => n.deaths.length > 0)) breaches.push("a node died by no signal of ours");
    if (Object.values(finalExitCodes).some((c) => c !== 0)) {
      breaches.push(`final SIGTERM exit codes ${JSON.stringify(finalExitCodes)}`);
    }
    if (faults.some((f) => f.note)) breaches.push("a fault did not go as planned (see faults)");
    if (seqBreaches.length > 0) breaches.push(`${seqBreaches.length} seq breaches`);
    if (sent === 0) breaches.push("no message was sent");
    // `internal` is a bug by definition (PROTOCOL.md): a fault must map to `unavailable` or a close.
    const internal = Object.entries(clientErrors).filter(([k]) => k.endsWith(":internal"));
    if (internal.length > 0) {
      breaches.push(`requests answered internal: ${JSON.stringify(internal)}`);
    }

    return {
      seed: options.seed,
      seconds: options.seconds,
      pairs: options.pairs,
      startedAt: new Date(t0).toISOString(),
      load: load.trim(),
      faults,
      faultCounts,
      sent,
      delivered,
      lost: lost.slice(0, 50),
      duplicateDeliveries,
      phantoms: phantoms.slice(0, 20),
      storedTwice,
      unsettledSends,
      seqChecked,
      seqBreaches: seqBreaches.slice(0, 20),
      resentApplied,
      logins: users.reduce((n, u) => n + u.logins, 0),
      clientErrors,
      closeCodes,
      onlineAtEnd,
      deaths,
      finalExitCodes,
      nodeErrorEvents,
      nodeErrorLines,
      settleMs,
      ok: breaches.length === 0,
      breaches,
    };
  } finally {
    for (const undo of stack.reverse()) await undo().catch(() => {});
  }
}

if (import.meta.main) {
  let options: Options;
  try {
    options = parseArgs(Deno.args);
  } catch (error) {
    console.error(error instanceof Error ? error.message : String(error));
    Deno.exit(2);
  }
  const log = (line: string) => console.error(`[chaos] ${line}`);
  // A first SIGINT or SIGTERM ends the faults and lets the run settle, check and clean up.
  const stop = new AbortController();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => {
      log(`${signal}: no more faults; settling, checking and cleaning up`);
      stop.abort();
    });
  }
  const report = await runChaos(options, log, stop.signal);
  const out = options.out ??
    new URL(`./results/chaos-${report.startedAt.replaceAll(":", "-")}.json`, import.meta.url)
      .pathname;
  await Deno.writeTextFile(out, JSON.stringify(report, null, 2) + "\n");
  log(
    `${report.ok ? "ok" : "FAILED"}: ${report.sent} sent, ${report.delivered} delivered, ` +
      `${report.lost.length} lost, ${report.duplicateDeliveries} duplicate deliveries, ` +
      `${report.resentApplied} retried answers behind the start, ` +
      `${report.faults.length} faults ${JSON.stringify(report.faultCounts)}; report ${out}`,
  );
  for (const breach of report.breaches) log(`breach: ${breach}`);
  Deno.exit(report.ok ? 0 : 1);
}
