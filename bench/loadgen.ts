/**
 * @module A load-generator process: holds WebSockets to a server, logs them in, sends and counts
 * messages, all on commands read as JSON lines from stdin (bench/protocol.ts). The bench runs
 * several of these so that the load never shares an event loop with the server or the bench.
 */
import {
  type Command,
  type ConnectCommand,
  type ConnectResult,
  type Login,
  type RunCommand,
  type RunResult,
  type SocketsResult,
  wallClock,
} from "./protocol.ts";

type Frame = Record<string, unknown> & { type: string };
type Message = { id: number; text: string };

/** Milliseconds on the bench's clock: this process's wall clock less the offset the bench found. */
let offset = 0;
const clock = () => wallClock() - offset;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Replies awaited by ref, across every socket of this process. */
const replies = new Map<number, (frame: Frame) => void>();
let nextRef = 1;

const closeCodes: Record<string, number> = {};

/** The push handler of the run in progress; pushes outside a run are dropped. */
let onPush: ((conn: Conn, message: Message) => void) | null = null;

class Conn {
  user = 0;
  open = false;
  /** The socket opened at some point: a later close is a drop, not a failed connect. */
  opened = false;
  readonly closed: Promise<void>;
  /** Message ids received and not yet acknowledged. */
  acks: number[] = [];
  constructor(readonly ws: WebSocket) {
    this.closed = new Promise((resolve) => {
      ws.addEventListener("close", (event) => {
        this.open = false;
        closeCodes[event.code] = (closeCodes[event.code] ?? 0) + 1;
        conns.delete(this);
        resolve();
      });
    });
    ws.addEventListener("message", (event) => this.#frame(event.data));
  }

  #frame(data: unknown) {
    if (typeof data !== "string") return;
    const frame = JSON.parse(data) as Frame;
    if (frame.type === "message") {
      onPush?.(this, frame.message as Message);
      return;
    }
    if (typeof frame.ref === "number") {
      const reply = replies.get(frame.ref);
      if (reply) {
        replies.delete(frame.ref);
        reply(frame);
      }
    }
  }

  send(frame: Record<string, unknown>) {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }
}

const conns = new Set<Conn>();
const byUser = new Map<number, Conn>();

function checkUrl(url: string) {
  const parsed = new URL(url);
  if (parsed.hostname !== "127.0.0.1") {
    throw new Error(`Refusing to load "${url}": the bench only targets 127.0.0.1`);
  }
}

/** Opens a socket and logs it in; resolves with the welcome or rejects with an error code. */
function login(command: ConnectCommand, login: Login, deadline: number): Promise<Frame> {
  return new Promise((resolve, reject) => {
    let ws: WebSocket;
    try {
      ws = new WebSocket(command.url);
    } catch {
      reject(new Error("connect"));
      return;
    }
    const conn = new Conn(ws);
    conns.add(conn);
    const ref = nextRef++;
    const timer = setTimeout(() => {
      replies.delete(ref);
      ws.close();
      reject(new Error("timeout"));
    }, Math.max(0, deadline - clock()));
    conn.closed.then(() => {
      clearTimeout(timer);
      replies.delete(ref);
      reject(new Error(conn.opened ? "closed" : "connect"));
    });
    ws.addEventListener("open", () => {
      conn.open = true;
      conn.opened = true;
      replies.set(ref, (frame) => {
        clearTimeout(timer);
        if (frame.type !== "welcome") {
          ws.close();
          reject(new Error(String(frame.code ?? frame.type)));
          return;
        }
        conn.user = login.user;
        byUser.set(login.user, conn);
        resolve(frame);
      });
      const credentials = command.flavour === "raw"
        ? { user: login.user }
        : login.token !== undefined
        ? { token: login.token }
        : { name: login.name, password: login.password };
      conn.send({ type: "login", ref, ...credentials });
    }, { once: true });
  });
}

async function connect(command: ConnectCommand): Promise<ConnectResult> {
  checkUrl(command.url);
  await sleep(command.startAt - clock());
  const deadline = clock() + command.deadlineMs;
  const result: ConnectResult = {
    ok: 0,
    failed: {},
    latencies: [],
    lastDoneAt: 0,
    tokens: {},
    failedUsers: [],
  };
  let next = 0;
  const worker = async () => {
    while (next < command.logins.length && clock() < deadline) {
      const one = command.logins[next++];
      const started = clock();
      try {
        const welcome = await login(command, one, deadline);
        result.ok++;
        result.latencies.push(round(clock() - started));
        if (command.keepTokens) result.tokens[one.user] = String(welcome.token);
      } catch (error) {
        const code = (error as Error).message;
        result.failed[code] = (result.failed[code] ?? 0) + 1;
        result.failedUsers.push(one.user);
      }
      result.lastDoneAt = clock();
    }
  };
  const workers = Math.max(1, Math.min(command.concurrency, command.logins.length));
  await Promise.all(Array.from({ length: workers }, worker));
  const skipped = command.logins.length - result.ok -
    Object.values(result.failed).reduce((a, b) => a + b, 0);
  if (skipped > 0) {
    result.failed.timeout = (result.failed.timeout ?? 0) + skipped;
    for (const one of command.logins.slice(next)) result.failedUsers.push(one.user);
  }
  return result;
}

/** How long a run waits for missing receipts once every one of its sends has been answered. */
const QUIET_MS = 5000;

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

async function run(command: RunCommand): Promise<RunResult> {
  const result: RunResult = {
    planned: command.senders.reduce((n, s) => n + s.count, 0),
    sent: 0,
    confirmed: 0,
    errors: {},
    errorMessages: {},
    received: 0,
    duplicates: 0,
    latencies: [],
    confirmLatencies: [],
    lastSendAt: 0,
    lastReceiptAt: 0,
    timedOut: false,
    stalled: false,
  };
  const prefix = `${command.tag} `;
  const seen = new Map<Conn, Set<number>>();
  const pad = command.padding > 0 ? ` ${"x".repeat(command.padding)}` : "";
  let finish: () => void = () => {};
  const finished = new Promise<void>((resolve) => finish = resolve);
  const done = () =>
    result.received >= command.expectReceipts &&
    result.confirmed + errorCount() >= result.planned;
  const errorCount = () => Object.values(result.errors).reduce((a, b) => a + b, 0);

  onPush = (conn, message) => {
    if (!message.text.startsWith(prefix)) return;
    let ids = seen.get(conn);
    if (!ids) seen.set(conn, ids = new Set());
    if (ids.has(message.id)) {
      result.duplicates++;
      return;
    }
    ids.add(message.id);
    const at = clock();
    const sentAt = Number(
      message.text.slice(prefix.length, message.text.indexOf(" ", prefix.length)),
    );
    result.latencies.push(round(at - sentAt));
    result.received++;
    result.lastReceiptAt = at;
    if (command.ack) conn.acks.push(message.id);
    if (done()) finish();
  };
  const acker = command.ack ? setInterval(flushAcks, command.ackEveryMs) : undefined;

  /** Sends message `seq` of `plan`, stamped `at`; `then` runs when it is answered. */
  const sendOne = (
    plan: RunCommand["senders"][number],
    seq: number,
    at: number,
    then: () => void,
  ) => {
    const conn = byUser.get(plan.from);
    const ref = nextRef++;
    const sentAt = clock();
    replies.set(ref, (frame) => {
      if (frame.type === "sent") {
        result.confirmed++;
        result.confirmLatencies.push(round(clock() - sentAt));
      } else {
        const code = String(frame.code ?? frame.type);
        result.errors[code] = (result.errors[code] ?? 0) + 1;
        result.errorMessages[code] ??= String(frame.message ?? "");
      }
      if (done()) finish();
      then();
    });
    if (!conn || !conn.open) {
      replies.delete(ref);
      result.errors.closed = (result.errors.closed ?? 0) + 1;
      if (done()) finish();
      then();
      return;
    }
    conn.send({
      type: "send",
      ref,
      to: plan.to,
      text: `${prefix}${at.toFixed(3)} ${seq}${pad}`,
      ...(command.clientIds ? { clientId: `${command.tag}-${plan.from}-${seq}` } : {}),
    });
    result.sent++;
    result.lastSendAt = sentAt;
  };

  await sleep(command.startAt - clock());
  const deadline = setTimeout(() => {
    result.timedOut = true;
    finish();
  }, command.deadlineMs);
  // A message answered with an error may be delivered all the same (or not), so the receipts still
  // missing once every send is answered may never come: give up on them after a quiet spell.
  const quiet = setInterval(() => {
    const answered = result.confirmed + errorCount() >= result.planned;
    if (answered && clock() - Math.max(result.lastReceiptAt, command.startAt) > QUIET_MS) {
      result.stalled = true;
      finish();
    }
  }, 250);
  if (command.ratePerSender === undefined) {
    // Closed loop: each answer frees a slot of the sender's window for its next message.
    for (const plan of command.senders) {
      let seq = 0;
      const next = () => {
        if (seq >= plan.count || result.timedOut) return;
        sendOne(plan, seq++, clock(), next);
      };
      for (let i = 0; i < Math.min(command.window, plan.count); i++) next();
    }
  } else {
    void openLoop(command, sendOne, () => result.timedOut);
  }
  if (done()) finish();
  await finished;
  clearTimeout(deadline);
  clearInterval(quiet);
  clearInterval(acker);
  flushAcks();
  onPush = null;
  return result;
}

/**
 * Open loop: sender `s` sends message `k` at `startAt + phase(s) + k / rate`, phases spread evenly
 * so that the offered load is smooth. Each message carries its scheduled time, so a stalled server
 * shows as latency instead of as fewer sends (no coordinated omission).
 */
async function openLoop(
  command: RunCommand,
  sendOne: (plan: RunCommand["senders"][number], seq: number, at: number, then: () => void) => void,
  stopped: () => boolean,
) {
  const interval = 1000 / command.ratePerSender!;
  const plans = command.senders.map((plan, i) => ({
    plan,
    phase: (i / command.senders.length) * interval,
    seq: 0,
  }));
  const last = command.startAt + Math.max(...command.senders.map((s) => s.count)) * interval +
    interval;
  while (!stopped() && clock() <= last + 1000) {
    const now = clock();
    let left = 0;
    for (const p of plans) {
      while (p.seq < p.plan.count && command.startAt + p.phase + p.seq * interval <= now) {
        sendOne(p.plan, p.seq, command.startAt + p.phase + p.seq * interval, () => {});
        p.seq++;
      }
      left += p.plan.count - p.seq;
    }
    if (left === 0) return;
    await sleep(1);
  }
}

function flushAcks() {
  for (const conn of conns) {
    if (conn.acks.length === 0) continue;
    const ids = conn.acks;
    conn.acks = [];
    // PROTOCOL.md caps an ack at 1000 ids.
    for (let i = 0; i < ids.length; i += 1000) {
      conn.send({ type: "ack", ids: ids.slice(i, i + 1000) });
    }
  }
}

async function closeAll(deadlineMs: number): Promise<SocketsResult> {
  const all = [...conns];
  for (const conn of all) {
    try {
      conn.ws.close(1000);
    } catch {
      // Already closing.
    }
  }
  await waitAll(all, deadlineMs);
  byUser.clear();
  return sockets();
}

async function waitAll(all: Conn[], deadlineMs: number) {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    Promise.all(all.map((c) => c.closed)),
    new Promise((resolve) => timer = setTimeout(resolve, deadlineMs)),
  ]);
  clearTimeout(timer);
}

function sockets(): SocketsResult {
  return { open: conns.size, closeCodes: { ...closeCodes } };
}

async function handle(command: Command): Promise<unknown> {
  switch (command.cmd) {
    case "now":
      return wallClock();
    case "offset":
      offset = command.ms;
      return null;
    case "connect":
      return await connect(command);
    case "run":
      return await run(command);
    case "closeAll":
      return await closeAll(command.deadlineMs);
    case "waitClosed": {
      const port = command.url ? new URL(command.url).port : undefined;
      await waitAll(
        [...conns].filter((c) => port === undefined || new URL(c.ws.url).port === port),
        command.deadlineMs,
      );
      return sockets();
    }
    case "sockets":
      return sockets();
    case "exit":
      setTimeout(() => Deno.exit(0), 0);
      return null;
  }
}

/** Writes one reply line whole: a pipe may take a long line (latency arrays) in several writes. */
function reply(line: Record<string, unknown>) {
  const bytes = new TextEncoder().encode(JSON.stringify(line) + "\n");
  for (let done = 0; done < bytes.length;) done += Deno.stdout.writeSync(bytes.subarray(done));
}

if (import.meta.main) {
  let buffer = "";
  for await (const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
    buffer += chunk;
    const lines = buffer.split("\n");
    buffer = lines.pop()!;
    for (const line of lines) {
      if (!line.trim()) continue;
      const { id, ...command } = JSON.parse(line) as { id: number } & Command;
      handle(command as Command).then(
        (result) => reply({ id, result }),
        (error) => reply({ id, error: error instanceof Error ? error.message : String(error) }),
      );
    }
  }
  // The bench closed our stdin: it is gone, so there is nobody to work for.
  Deno.exit(0);
}
