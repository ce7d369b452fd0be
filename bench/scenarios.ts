/**
 * @module The scenarios of issue 6. Each starts what it measures on a fresh database, drives it
 * from load-generator processes, ends everything it started, and returns its figures beside its
 * parameters.
 */
import {
  type BenchPostgres,
  freshDatabase,
  onlineCount,
  type ScenarioDatabase,
  type SeededUser,
  seedGroup,
  seedUsers,
  type Sql,
  waitForOnline,
} from "./database.ts";
import { courseScenario } from "./course.ts";
import { countingRows, type RowsWritten } from "./rows.ts";
import { type Loadgen, LoadgenPool } from "./loadgens.ts";
import type { Profile } from "./profiles.ts";
import { type Flavour, type Login, type SendPlan, wallClock } from "./protocol.ts";
import {
  cpuByPid,
  cpuMs,
  GENEROUS_LIMITS,
  machineTicks,
  NODE_DEFAULTS,
  openFileLimit,
  rssBytes,
  type ServerProcess,
  startNode,
  startRawRelay,
} from "./servers.ts";
import { concat, mergeCounts, percentile, perSec, spread, sum } from "./stats.ts";
import { NatsCluster } from "../tests/support/nats.ts";

export type Entry = Record<string, unknown> & { name: string };

export interface Context {
  profile: Profile;
  pg: BenchPostgres;
  log: (line: string) => void;
  /** HOST:PORT of another course-protocol server to measure beside Parley (`--course-server`). */
  courseServer?: string;
}

/** Time allowed for the load generators to start a command together. */
const START_DELAY_MS = 300;
/** Receivers acknowledge what they got this often, in one `ack` per socket. */
const ACK_EVERY_MS = 50;
/** Characters of padding per message: with the tag and timestamp, a text of about 64 bytes. */
const PADDING = 32;
/** Measured runs of the raw relay per window, of which the median counts. */
const RAW_REPEATS = 3;
/** Logins a load generator keeps in flight while it fills a node with idle sockets. */
const FILL_CONCURRENCY = 100;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Runs `fn` with a fresh database, and drops it afterwards whatever happened. */
async function withDatabase<T>(
  ctx: Context,
  label: string,
  fn: (db: ScenarioDatabase) => Promise<T>,
): Promise<T> {
  const db = await freshDatabase(ctx.pg, label);
  try {
    return await fn(db);
  } finally {
    await db.drop();
  }
}

/** Ends what a scenario started, in reverse order, each step whatever the others did. */
class Stack {
  #steps: (() => Promise<unknown>)[] = [];
  push<T>(thing: T, stop: (thing: T) => Promise<unknown>): T {
    this.#steps.push(() => stop(thing));
    return thing;
  }
  async unwind(): Promise<void> {
    for (const step of this.#steps.reverse()) await step().catch(() => {});
  }
}

async function scoped<T>(fn: (stack: Stack) => Promise<T>): Promise<T> {
  const stack = new Stack();
  try {
    return await fn(stack);
  } finally {
    await stack.unwind();
  }
}

const stopServer = (s: ServerProcess) => s.stop(10_000);
const stopPool = (p: LoadgenPool) => p.stop();

/** `items` dealt round-robin into `n` hands. */
function deal<T>(items: readonly T[], n: number): T[][] {
  const hands: T[][] = Array.from({ length: n }, () => []);
  items.forEach((item, i) => hands[i % n].push(item));
  return hands;
}

const byToken = (u: SeededUser): Login => ({ user: u.id, token: u.token });
const byPassword = (u: SeededUser): Login => ({ user: u.id, name: u.name, password: u.password });

interface Connected {
  ok: number;
  failed: Record<string, number>;
  latencies: number[];
  totalMs: number;
  tokens: Record<string, string>;
  failedUsers: number[];
}

interface ConnectOptions {
  concurrency: number;
  deadlineMs: number;
  keepTokens?: boolean;
  /** Where connectAll adds up the failures its retry made good, for the scenario to report. */
  retried?: Record<string, number>;
}

/** Logs in `logins[i]` from load generator `i`, all starting together. */
async function connect(
  gens: readonly Loadgen[],
  server: ServerProcess,
  flavour: Flavour,
  logins: readonly Login[][],
  options: ConnectOptions,
): Promise<Connected> {
  const startAt = wallClock() + START_DELAY_MS;
  const results = await Promise.all(gens.map((gen, i) =>
    gen.connect({
      url: server.wsUrl,
      flavour,
      logins: logins[i] ?? [],
      concurrency: options.concurrency,
      startAt,
      deadlineMs: options.deadlineMs,
      keepTokens: options.keepTokens ?? false,
    })
  ));
  return {
    ok: sum(results.map((r) => r.ok)),
    failed: mergeCounts(results.map((r) => r.failed)),
    latencies: concat(results.map((r) => r.latencies)),
    totalMs: Math.max(0, ...results.map((r) => r.lastDoneAt - startAt)),
    tokens: Object.assign({}, ...results.map((r) => r.tokens)),
    failedUsers: results.flatMap((r) => r.failedUsers),
  };
}

/**
 * Connects for a scenario that needs every socket: failed logins are tried once more (and counted
 * in `options.retried`, for they show a server bug), and any still failing stop the scenario.
 */
async function connectAll(...args: Parameters<typeof connect>): Promise<Connected> {
  const [gens, server, flavour, logins, options] = args;
  const result = await connect(...args);
  if (result.failedUsers.length === 0) return result;
  const failed = new Set(result.failedUsers);
  const again = await connect(
    gens,
    server,
    flavour,
    logins.map((list) => list.filter((l) => failed.has(l.user))),
    options,
  );
  if (again.failedUsers.length > 0) {
    // The server logs the cause of an "internal" with its stack: show it beside the count.
    const errors = server.logs.filter((l) => l.level === "error").slice(0, 3);
    throw new Error(
      `${again.failedUsers.length} of ${sum(logins.map((l) => l.length))} logins failed twice: ` +
        JSON.stringify(again.failed) +
        (errors.length > 0 ? `; server errors: ${JSON.stringify(errors)}` : ""),
    );
  }
  for (const [code, count] of Object.entries(result.failed)) {
    if (options.retried) options.retried[code] = (options.retried[code] ?? 0) + count;
  }
  return {
    ...result,
    ok: result.ok + again.ok,
    tokens: { ...result.tokens, ...again.tokens },
    failedUsers: [],
  };
}

interface Part {
  gen: Loadgen;
  senders: SendPlan[];
  expectReceipts: number;
}

interface TrafficOptions {
  window: number;
  ratePerSender?: number;
  ack: boolean;
  deadlineMs: number;
  clientIds: boolean;
}

interface Traffic {
  planned: number;
  sent: number;
  confirmed: number;
  errors: Record<string, number>;
  errorMessages: Record<string, string>;
  expected: number;
  received: number;
  duplicates: number;
  latencies: number[];
  confirmLatencies: number[];
  elapsedMs: number;
  timedOut: boolean;
  stalled: boolean;
  serverCpuMs: number | null;
  loadgenCpuMs: number | null;
  postgresCpuMs: number | null;
  /** Of all CPUs of the machine over the run, the share busy with anything (this bench or not). */
  machineBusyPercent: number;
}

let runs = 0;

/** CPU used by `pids` together, or null when one of them cannot be read. */
async function cpuOf(pids: number[]): Promise<number | null> {
  try {
    return sum(await Promise.all(pids.map(cpuMs)));
  } catch {
    return null;
  }
}

const delta = (a: number | null, b: number | null) =>
  a !== null && b !== null ? Math.round(b - a) : null;

/** One run of traffic: every part starts at the same instant; figures merged across processes. */
async function traffic(parts: Part[], o: TrafficOptions, watch: Watch): Promise<Traffic> {
  const tag = `r${++runs}.${crypto.randomUUID().slice(0, 6)}`;
  const startAt = wallClock() + START_DELAY_MS;
  const gens = parts.map((p) => p.gen.pid);
  const servers = watch.servers.map((s) => s.pid);
  const cpuBefore = await cpuOf(servers);
  const gensBefore = await cpuOf(gens);
  const pgBefore = await backendCpu(watch.sql);
  const machineBefore = await machineTicks();
  const results = await Promise.all(parts.map((p) =>
    p.gen.run({
      tag,
      startAt,
      senders: p.senders,
      window: o.window,
      ratePerSender: o.ratePerSender,
      expectReceipts: p.expectReceipts,
      ack: o.ack,
      ackEveryMs: ACK_EVERY_MS,
      clientIds: o.clientIds,
      padding: PADDING,
      deadlineMs: o.deadlineMs,
    })
  ));
  const cpuAfter = await cpuOf(servers);
  const gensAfter = await cpuOf(gens);
  const pgAfter = await backendCpu(watch.sql);
  const machineAfter = await machineTicks();
  const lastReceipt = Math.max(...results.map((r) => r.lastReceiptAt));
  return {
    planned: sum(results.map((r) => r.planned)),
    sent: sum(results.map((r) => r.sent)),
    confirmed: sum(results.map((r) => r.confirmed)),
    errors: mergeCounts(results.map((r) => r.errors)),
    errorMessages: Object.assign({}, ...results.map((r) => r.errorMessages)),
    expected: sum(parts.map((p) => p.expectReceipts)),
    received: sum(results.map((r) => r.received)),
    duplicates: sum(results.map((r) => r.duplicates)),
    latencies: concat(results.map((r) => r.latencies)),
    confirmLatencies: concat(results.map((r) => r.confirmLatencies)),
    elapsedMs: Math.max(0, lastReceipt - startAt),
    timedOut: results.some((r) => r.timedOut),
    stalled: results.some((r) => r.stalled),
    serverCpuMs: delta(cpuBefore, cpuAfter),
    loadgenCpuMs: delta(gensBefore, gensAfter),
    postgresCpuMs: pgBefore.size > 0 || pgAfter.size > 0 ? pidDelta(pgBefore, pgAfter) : null,
    machineBusyPercent: Math.round(
      (100 * (machineAfter.busy - machineBefore.busy)) / (machineAfter.total - machineBefore.total),
    ),
  };
}

/** What a traffic run reads CPU figures from: the nodes, and the database's backends. */
interface Watch {
  servers: ServerProcess[];
  sql: Sql;
}

/** CPU used so far by the backends serving this scenario's database, by pid. */
async function backendCpu(sql: Sql): Promise<Map<number, number>> {
  const rows = await sql<{ pid: number }[]>`
    select pid from pg_stat_activity where datname = current_database()`;
  return await cpuByPid(rows.map((r) => r.pid), "postgres");
}

/** CPU used between two readings by pids; one that appeared in between counts from zero. */
function pidDelta(before: Map<number, number>, after: Map<number, number>): number {
  let total = 0;
  for (const [pid, ms] of after) total += ms - (before.get(pid) ?? 0);
  return Math.round(total);
}

/** The figures of one traffic run, as they appear in an entry. */
function figures(t: Traffic) {
  const latency = spread(t.latencies);
  const confirm = spread(t.confirmLatencies);
  return {
    msgsPerSec: perSec(t.received, t.elapsedMs),
    ...latency,
    sent: t.sent,
    confirmed: t.confirmed,
    expected: t.expected,
    delivered: t.received,
    duplicates: t.duplicates,
    errors: t.errors,
    errorMessages: t.errorMessages,
    timedOut: t.timedOut,
    stalled: t.stalled,
    elapsedMs: Math.round(t.elapsedMs),
    sentP50Ms: confirm.p50Ms,
    sentP99Ms: confirm.p99Ms,
    // CPU over the whole run, start delay included: what limits throughput shows here.
    serverCpuMs: t.serverCpuMs,
    loadgenCpuMs: t.loadgenCpuMs,
    postgresCpuMs: t.postgresCpuMs,
    machineBusyPercent: t.machineBusyPercent,
  };
}

/** Pairs user i with user i + n/2: the first half send, the second half receive. */
function pairs(users: SeededUser[]): { from: SeededUser; to: SeededUser }[] {
  const half = Math.floor(users.length / 2);
  return users.slice(0, half).map((from, i) => ({ from, to: users[half + i] }));
}

/** Splits `total` into `n` whole shares that differ by at most one. */
function shares(total: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => Math.floor(total / n) + (i < total % n ? 1 : 0));
}

/** Each load generator's part of a one-to-one workload: both ends of a pair in one process. */
function directParts(
  gens: readonly Loadgen[],
  hands: { from: SeededUser; to: SeededUser }[][],
  perSender: (index: number) => number,
): Part[] {
  let index = 0;
  return gens.map((gen, g) => {
    const senders = hands[g].map((p) => ({
      from: p.from.id,
      to: { user: p.to.id },
      count: perSender(index++),
    }));
    return { gen, senders, expectReceipts: sum(senders.map((s) => s.count)) };
  });
}

// ---------------------------------------------------------------------------------------------
// direct

export async function direct(ctx: Context): Promise<Entry[]> {
  const p = ctx.profile.direct;
  const deadlineMs = ctx.profile.runDeadlineMs;
  // Login failures that a retry made good: a server bug shows here, not as a failed scenario.
  const retried: Record<string, number> = {};
  return await withDatabase(ctx, "direct", (db) =>
    scoped(async (stack) => {
      const node = stack.push(await startNode(db.url, "bench-direct", GENEROUS_LIMITS), stopServer);
      const pool = stack.push(await LoadgenPool.start(ctx.profile.loadgens), stopPool);
      const users = await seedUsers(db.sql, "d", p.users);
      const hands = deal(pairs(users), pool.size);
      const senders = Math.floor(p.users / 2);
      const perSender = shares(p.messages, senders);
      const logins = hands.map((h) => h.flatMap((pair) => [pair.from, pair.to]));

      /** Warm-up run, then the measured one, for each window, against `url`. */
      const measure = async (flavour: Flavour, server: ServerProcess, repeats: number) => {
        const toLogin = flavour === "raw" ? (u: SeededUser): Login => ({ user: u.id }) : byToken;
        await connectAll(pool.all, server, flavour, logins.map((l) => l.map(toLogin)), {
          concurrency: FILL_CONCURRENCY,
          retried,
          deadlineMs: 60_000,
        });
        const out = new Map<
          number,
          Traffic & { repeats: (number | null)[]; rowsWritten: RowsWritten | null }
        >();
        for (const window of p.windows) {
          const o = { window, ack: flavour === "parley", deadlineMs, clientIds: true };
          ctx.log(`direct ${flavour} window ${window}: warm-up`);
          const watch = { servers: [server], sql: db.sql };
          await traffic(directParts(pool.all, hands, () => p.warmupPerSender), o, watch);
          ctx.log(`direct ${flavour} window ${window}: ${p.messages} messages x ${repeats}`);
          const runs: Traffic[] = [];
          let rowsWritten: RowsWritten | null = null;
          for (let i = 0; i < repeats; i++) {
            const run = () => traffic(directParts(pool.all, hands, (i) => perSender[i]), o, watch);
            if (flavour === "parley" && i === 0) {
              // What the database writes per message, from pg_stat_user_tables.
              const counted = await countingRows(db.sql, run, (t) => t.confirmed);
              rowsWritten = counted.rows;
              runs.push(counted.result);
            } else runs.push(await run());
          }
          // The median run by throughput: one short run on a shared machine is noisy.
          runs.sort((a, b) => a.received / a.elapsedMs - b.received / b.elapsedMs);
          out.set(window, {
            ...runs[runs.length >> 1],
            repeats: runs.map((r) => figures(r).msgsPerSec),
            rowsWritten,
          });
        }
        await pool.closeAll();
        return out;
      };

      const persisted = await measure("parley", node, 1);
      const relay = stack.push(await startRawRelay(), stopServer);
      // The relay's runs last a fraction of a second, so it gets three and reports the median.
      const raw = await measure("raw", relay, RAW_REPEATS);
      return p.windows.map((window) => {
        const a = figures(persisted.get(window)!);
        const b = { ...figures(raw.get(window)!), runsMsgsPerSec: raw.get(window)!.repeats };
        return {
          name: "direct",
          window,
          persistedMsgsPerSec: a.msgsPerSec,
          rowsPerMessage: persisted.get(window)!.rowsWritten?.perMessage ?? null,
          rowsWrittenByTable: persisted.get(window)!.rowsWritten?.byTable ?? null,
          rawRelayMsgsPerSec: b.msgsPerSec,
          ratio: a.msgsPerSec !== null && b.msgsPerSec ? round3(a.msgsPerSec / b.msgsPerSec) : null,
          p50Ms: a.p50Ms,
          p99Ms: a.p99Ms,
          maxMs: a.maxMs,
          users: p.users,
          senders,
          messages: p.messages,
          warmupMessages: p.warmupPerSender * senders,
          loadgens: pool.size,
          loginRetries: retried,
          clientIds: true,
          ackEveryMs: ACK_EVERY_MS,
          serverEnv: { ...NODE_DEFAULTS, ...GENEROUS_LIMITS },
          persisted: a,
          raw: b,
        };
      });
    }));
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

// ---------------------------------------------------------------------------------------------
// latency

export async function latency(ctx: Context): Promise<Entry[]> {
  const p = ctx.profile.latency;
  const retried: Record<string, number> = {};
  return await withDatabase(ctx, "latency", (db) =>
    scoped(async (stack) => {
      const node = stack.push(
        await startNode(db.url, "bench-latency", GENEROUS_LIMITS),
        stopServer,
      );
      const pool = stack.push(await LoadgenPool.start(ctx.profile.loadgens), stopPool);
      const users = await seedUsers(db.sql, "l", p.users);
      const hands = deal(pairs(users), pool.size);
      const senders = Math.floor(p.users / 2);
      const ratePerSender = p.msgsPerSec / senders;
      const perSender = (ms: number) => Math.round((ratePerSender * ms) / 1000);
      await connectAll(
        pool.all,
        node,
        "parley",
        hands.map((h) => h.flatMap((pair) => [byToken(pair.from), byToken(pair.to)])),
        {
          concurrency: FILL_CONCURRENCY,
          retried,
          deadlineMs: 60_000,
        },
      );
      const base = { ack: true, clientIds: true, deadlineMs: ctx.profile.runDeadlineMs };
      const watch = { servers: [node], sql: db.sql };
      // The same load first, as `direct` warms up before it measures: a fresh node's first
      // seconds (code not yet optimised, the database's caches and plans not yet made) are
      // slower than the node under way. Its figures are reported apart, not hidden.
      const run = (ms: number) =>
        traffic(
          directParts(pool.all, hands, () => perSender(ms)),
          { ...base, window: 1, ratePerSender, deadlineMs: ms + p.drainMs },
          watch,
        );
      ctx.log(`latency: ${p.msgsPerSec} msg/s offered, ${p.warmupMs} ms of warm-up`);
      const warm = figures(await run(p.warmupMs));
      ctx.log(`latency: ${p.msgsPerSec} msg/s offered for ${p.durationMs} ms`);
      const f = figures(await run(p.durationMs));
      return [{
        name: "latency",
        offeredMsgsPerSec: p.msgsPerSec,
        durationMs: p.durationMs,
        achievedMsgsPerSec: f.msgsPerSec,
        warmup: { durationMs: p.warmupMs, p50Ms: warm.p50Ms, p99Ms: warm.p99Ms, maxMs: warm.maxMs },
        p50Ms: f.p50Ms,
        p99Ms: f.p99Ms,
        maxMs: f.maxMs,
        users: p.users,
        senders,
        ratePerSender,
        openLoop: true,
        loadgens: pool.size,
        loginRetries: retried,
        serverEnv: { ...NODE_DEFAULTS, ...GENEROUS_LIMITS },
        ...withoutKeys(f, ["msgsPerSec", "p50Ms", "p99Ms", "maxMs"]),
      }];
    }));
}

function withoutKeys<T extends Record<string, unknown>>(o: T, keys: string[]) {
  return Object.fromEntries(Object.entries(o).filter(([k]) => !keys.includes(k)));
}

// ---------------------------------------------------------------------------------------------
// cross

export async function cross(ctx: Context): Promise<Entry[]> {
  const p = ctx.profile.cross;
  const retried: Record<string, number> = {};
  return await withDatabase(ctx, "cross", (db) =>
    scoped(async (stack) => {
      const a = stack.push(await startNode(db.url, "bench-cross-a", GENEROUS_LIMITS), stopServer);
      const b = stack.push(await startNode(db.url, "bench-cross-b", GENEROUS_LIMITS), stopServer);
      const pool = stack.push(await LoadgenPool.start(ctx.profile.loadgens), stopPool);
      const users = await seedUsers(db.sql, "c", p.users);
      const hands = deal(pairs(users), pool.size);
      const senders = Math.floor(p.users / 2);
      const perSender = shares(p.messages, senders);
      const options = { concurrency: FILL_CONCURRENCY, retried, deadlineMs: 60_000 };
      await connectAll(
        pool.all,
        a,
        "parley",
        hands.map((h) => h.map((pair) => byToken(pair.from))),
        options,
      );
      await connectAll(
        pool.all,
        b,
        "parley",
        hands.map((h) => h.map((pair) => byToken(pair.to))),
        options,
      );
      const o = {
        window: p.window,
        ack: true,
        clientIds: true,
        deadlineMs: ctx.profile.runDeadlineMs,
      };
      const watch = { servers: [a, b], sql: db.sql };
      await traffic(
        directParts(pool.all, hands, () => ctx.profile.direct.warmupPerSender),
        o,
        watch,
      );
      ctx.log(`cross: ${p.messages} messages, node A to node B`);
      const cpuA = await cpuMs(a.pid);
      const cpuB = await cpuMs(b.pid);
      const t = await traffic(directParts(pool.all, hands, (i) => perSender[i]), o, watch);
      const f = figures(t);
      return [{
        name: "cross",
        window: p.window,
        msgsPerSec: f.msgsPerSec,
        p50Ms: f.p50Ms,
        p99Ms: f.p99Ms,
        maxMs: f.maxMs,
        users: p.users,
        senders,
        messages: p.messages,
        loadgens: pool.size,
        loginRetries: retried,
        clientIds: true,
        serverEnv: { ...NODE_DEFAULTS, ...GENEROUS_LIMITS },
        ...withoutKeys(f, ["msgsPerSec", "p50Ms", "p99Ms", "maxMs"]),
        senderNodeCpuMs: Math.round(await cpuMs(a.pid) - cpuA),
        recipientNodeCpuMs: Math.round(await cpuMs(b.pid) - cpuB),
      }];
    }));
}

// ---------------------------------------------------------------------------------------------
// cluster

/** This node's `parley_bus_messages_received_total`, summed over kinds. */
async function busReceived(server: ServerProcess): Promise<number> {
  const text = await fetch(`${server.url}/metrics`).then((r) => r.text());
  let total = 0;
  for (const m of text.matchAll(/^parley_bus_messages_received_total\{[^}]*\} (\d+)/gm)) {
    total += Number(m[1]);
  }
  return total;
}

/**
 * Three nodes, one-to-one traffic between users on nodes A and B (half each way), node C holding
 * idle users only; once on the PostgreSQL bus, once on a three-server NATS cluster. What each node
 * takes in from the bus per delivered message shows the routing: on LISTEN/NOTIFY every node
 * receives every notification, on NATS only the nodes holding recipients do.
 */
export async function cluster(ctx: Context): Promise<Entry[]> {
  const p = ctx.profile.cluster;
  const entries: Entry[] = [];
  for (const bus of ["postgres", "nats"] as const) {
    const retried: Record<string, number> = {};
    entries.push(
      await withDatabase(ctx, `cluster_${bus}`, (db) =>
        scoped(async (stack) => {
          const nats = bus === "nats"
            ? stack.push(await NatsCluster.start(3), (c) => c.stopAll())
            : null;
          const env = { ...GENEROUS_LIMITS, ...(nats ? { BUS_URL: nats.busUrl } : {}) };
          const nodes = [];
          for (const id of ["a", "b", "c"]) {
            nodes.push(stack.push(await startNode(db.url, `bench-cluster-${id}`, env), stopServer));
          }
          const [a, b, c] = nodes;
          const pool = stack.push(await LoadgenPool.start(ctx.profile.loadgens), stopPool);
          const users = await seedUsers(db.sql, `k${bus[0]}`, p.users + p.idle);
          const hands = deal(pairs(users.slice(0, p.users)), pool.size);
          const senders = Math.floor(p.users / 2);
          const perSender = shares(p.messages, senders);
          const options = { concurrency: FILL_CONCURRENCY, retried, deadlineMs: 60_000 };
          // Pair i sends from A to B when i is even, from B to A when odd.
          const onA = (h: { from: SeededUser; to: SeededUser }[]) =>
            h.map((pair, i) => byToken(i % 2 === 0 ? pair.from : pair.to));
          const onB = (h: { from: SeededUser; to: SeededUser }[]) =>
            h.map((pair, i) => byToken(i % 2 === 0 ? pair.to : pair.from));
          await connectAll(pool.all, a, "parley", hands.map(onA), options);
          await connectAll(pool.all, b, "parley", hands.map(onB), options);
          const idle = deal(users.slice(p.users), pool.size).map((h) => h.map(byToken));
          await connectAll(pool.all, c, "parley", idle, options);
          const o = {
            window: p.window,
            ack: true,
            clientIds: true,
            deadlineMs: ctx.profile.runDeadlineMs,
          };
          const watch = { servers: nodes, sql: db.sql };
          await traffic(
            directParts(pool.all, hands, () => ctx.profile.direct.warmupPerSender),
            o,
            watch,
          );
          ctx.log(`cluster ${bus}: ${p.messages} messages between nodes A and B, C idle`);
          const before = await Promise.all(nodes.map(busReceived));
          const t = await traffic(directParts(pool.all, hands, (i) => perSender[i]), o, watch);
          const after = await Promise.all(nodes.map(busReceived));
          const f = figures(t);
          const per = (i: number) =>
            t.received > 0 ? Math.round(1000 * (after[i] - before[i]) / t.received) / 1000 : null;
          return {
            name: "cluster",
            bus,
            window: p.window,
            msgsPerSec: f.msgsPerSec,
            p50Ms: f.p50Ms,
            p99Ms: f.p99Ms,
            maxMs: f.maxMs,
            busMessagesPerDelivered: { a: per(0), b: per(1), c: per(2) },
            busMessagesReceived: {
              a: after[0] - before[0],
              b: after[1] - before[1],
              c: after[2] - before[2],
            },
            users: p.users,
            idleOnC: p.idle,
            senders,
            messages: p.messages,
            loadgens: pool.size,
            loginRetries: retried,
            serverEnv: {
              ...NODE_DEFAULTS,
              ...GENEROUS_LIMITS,
              ...(nats ? { BUS_URL: "nats x3" } : {}),
            },
            ...withoutKeys(f, ["msgsPerSec", "p50Ms", "p99Ms", "maxMs"]),
          };
        })),
    );
  }
  return entries;
}

// ---------------------------------------------------------------------------------------------
// group

export async function group(ctx: Context): Promise<Entry[]> {
  const p = ctx.profile.group;
  const retried: Record<string, number> = {};
  return await withDatabase(ctx, "group", (db) =>
    scoped(async (stack) => {
      const node = stack.push(await startNode(db.url, "bench-group", GENEROUS_LIMITS), stopServer);
      const pool = stack.push(await LoadgenPool.start(ctx.profile.loadgens), stopPool);
      const users = await seedUsers(db.sql, "g", p.members);
      const groupId = await seedGroup(db.sql, "bench", users.map((u) => u.id));
      const hands = deal(users, pool.size);
      const senderIds = new Set(users.slice(0, p.senders).map((u) => u.id));
      const perSender = shares(p.messages, p.senders);
      await connectAll(pool.all, node, "parley", hands.map((h) => h.map(byToken)), {
        concurrency: FILL_CONCURRENCY,
        retried,
        deadlineMs: 60_000,
      });
      const partsFor = (count: (i: number) => number): Part[] => {
        let index = 0;
        const planned = hands.map((h) =>
          h.filter((u) => senderIds.has(u.id)).map((u) => ({
            from: u.id,
            to: { group: groupId },
            count: count(index++),
          }))
        );
        const total = sum(planned.flat().map((s) => s.count));
        // Every member but the sender gets each message.
        return pool.all.map((gen, g) => ({
          gen,
          senders: planned[g],
          expectReceipts: total * hands[g].length - sum(planned[g].map((s) => s.count)),
        }));
      };
      const o = {
        window: p.window,
        ack: true,
        clientIds: true,
        deadlineMs: ctx.profile.runDeadlineMs,
      };
      const watch = { servers: [node], sql: db.sql };
      await traffic(partsFor(() => 1), o, watch);
      ctx.log(`group: ${p.messages} messages to ${p.members} members`);
      const { result: t, rows } = await countingRows(
        db.sql,
        () => traffic(partsFor((i) => perSender[i]), o, watch),
        (t) => t.confirmed,
      );
      const f = figures(t);
      return [{
        name: "group",
        members: p.members,
        rowsPerMessage: rows.perMessage,
        rowsWrittenByTable: rows.byTable,
        messages: p.messages,
        senders: p.senders,
        window: p.window,
        deliveriesPerSec: f.msgsPerSec,
        messagesPerSec: perSec(t.confirmed, t.elapsedMs),
        p50Ms: f.p50Ms,
        p99Ms: f.p99Ms,
        maxMs: f.maxMs,
        loadgens: pool.size,
        loginRetries: retried,
        serverEnv: { ...NODE_DEFAULTS, ...GENEROUS_LIMITS },
        ...withoutKeys(f, ["msgsPerSec", "p50Ms", "p99Ms", "maxMs"]),
      }];
    }));
}

// ---------------------------------------------------------------------------------------------
// logins

export async function logins(ctx: Context): Promise<Entry[]> {
  const p = ctx.profile.logins;
  // Queued password logins wait for scrypt; the default 10 s login clock would cut that queue.
  const env = { AUTH_TIMEOUT_MS: "60000" };
  return await withDatabase(ctx, "logins", (db) =>
    scoped(async (stack) => {
      const node = stack.push(await startNode(db.url, "bench-logins", env), stopServer);
      const pool = stack.push(await LoadgenPool.start(ctx.profile.loadgens), stopPool);
      const users = await seedUsers(db.sql, "li", p.users);
      const hands = deal(users, pool.size);
      const per = Math.max(1, Math.ceil(p.passwordConcurrency / pool.size));
      ctx.log(`logins: ${p.users} by password, ${p.passwordConcurrency} at a time`);
      const byPw = await connect(
        pool.all,
        node,
        "parley",
        hands.map((h) => h.map(byPassword)),
        { concurrency: per, deadlineMs: 120_000, keepTokens: true },
      );
      // Tokens issued by the server at these logins are the ones the storm resumes with.
      await pool.closeAll(30_000);
      const offlineMs = await waitForOnline(db.sql, undefined, 0, 30_000, 50);
      if (offlineMs === null) {
        throw new Error("Users still show online 30 s after their sockets closed");
      }
      ctx.log(`logins: ${p.users} by token, all at once`);
      const storm = hands.map((h) =>
        h.filter((u) => byPw.tokens[u.id] !== undefined).map((u): Login => ({
          user: u.id,
          token: byPw.tokens[u.id],
        }))
      );
      const byTok = await connect(pool.all, node, "parley", storm, {
        concurrency: Math.max(...storm.map((s) => s.length), 1),
        deadlineMs: 120_000,
      });
      await pool.closeAll(30_000);
      const common = {
        users: p.users,
        loadgens: pool.size,
        serverEnv: { ...NODE_DEFAULTS, ...env },
      };
      return [
        {
          name: "logins",
          method: "password",
          count: p.users,
          concurrency: p.passwordConcurrency,
          ...loginFigures(byPw),
          ...common,
        },
        {
          name: "logins",
          method: "token",
          count: sum(storm.map((s) => s.length)),
          concurrency: sum(storm.map((s) => s.length)),
          afterOfflineMs: Math.round(offlineMs),
          ...loginFigures(byTok),
          ...common,
        },
      ];
    }));
}

function loginFigures(c: Connected) {
  const s = spread(c.latencies);
  return {
    totalMs: Math.round(c.totalMs),
    loginsPerSec: perSec(c.ok, c.totalMs),
    p50Ms: s.p50Ms,
    p99Ms: s.p99Ms,
    maxMs: s.maxMs,
    ok: c.ok,
    failed: c.failed,
  };
}

// ---------------------------------------------------------------------------------------------
// idle

/** Load generators enough to hold `n` sockets, spread so no one process nears its fd limit. */
function fillPool(ctx: Context, n: number): Promise<LoadgenPool> {
  return LoadgenPool.start(Math.max(1, Math.ceil(n / ctx.profile.socketsPerLoadgen)));
}

export async function idle(ctx: Context): Promise<Entry[]> {
  const n = ctx.profile.idle.connections;
  const warm = Math.min(100, Math.ceil(n / 10));
  const settleMs = 2000;
  const retried: Record<string, number> = {};
  return await withDatabase(ctx, "idle", (db) =>
    scoped(async (stack) => {
      const node = stack.push(await startNode(db.url, "bench-idle"), stopServer);
      const pool = stack.push(await fillPool(ctx, n), stopPool);
      const users = await seedUsers(db.sql, "i", n);
      const rssStart = await rssBytes(node.pid);
      // A first batch warms the login path, so the difference below is sockets, not compiled code.
      await connectAll(pool.all.slice(0, 1), node, "parley", [
        users.slice(0, warm).map(
          byToken,
        ),
      ], { concurrency: FILL_CONCURRENCY, retried, deadlineMs: 60_000 });
      await sleep(settleMs);
      const rssBefore = await rssBytes(node.pid);
      const memoryBefore = await nodeMemory(node);
      ctx.log(`idle: ${n} sockets`);
      const rest = deal(users.slice(warm), pool.size).map((h) => h.map(byToken));
      const filled = await connectAll(pool.all, node, "parley", rest, {
        concurrency: FILL_CONCURRENCY,
        retried,
        deadlineMs: 300_000,
      });
      await sleep(settleMs);
      const rssAfterFill = await rssBytes(node.pid);
      const memoryAfter = await nodeMemory(node);
      // Right after the fill, the heap still holds the logins' garbage: V8 frees it and returns
      // the pages once allocation has been quiet for a while (its memory reducer, ~10 to 20 s).
      // Idle memory is what stays then: the median of the samples over the last third.
      const samples: number[] = [];
      for (let t = 0; t < ctx.profile.idle.sampleMs; t += 1000) {
        await sleep(1000);
        samples.push(await rssBytes(node.pid));
      }
      const rssAfter = median(samples.slice(-Math.ceil(samples.length / 3)));
      const online = await onlineCount(db.sql);
      const added = n - warm;
      return [{
        name: "idle",
        connections: n,
        rssBytesPerConn: added > 0 ? Math.round((rssAfter - rssBefore) / added) : null,
        rssBytesPerConnAfterFill: added > 0 ? Math.round((rssAfterFill - rssBefore) / added) : null,
        idleSampleMs: ctx.profile.idle.sampleMs,
        rssSamplesKiB: samples.map((b) => Math.round(b / 1024)),
        rssStartBytes: rssStart,
        rssBeforeBytes: rssBefore,
        rssAfterBytes: rssAfter,
        // The V8 heap's share of the growth (the rest is Deno's sockets and the allocator).
        heapUsedBytesPerConn: memoryBefore && memoryAfter && added > 0
          ? Math.round((memoryAfter.heap_used - memoryBefore.heap_used) / added)
          : null,
        heapTotalBytesPerConn: memoryBefore && memoryAfter && added > 0
          ? Math.round((memoryAfter.heap_total - memoryBefore.heap_total) / added)
          : null,
        warmConnections: warm,
        onlineInUserState: online,
        fillMs: Math.round(filled.totalMs),
        fillLoginsPerSec: perSec(filled.ok, filled.totalMs),
        settleMs,
        loadgens: pool.size,
        loginRetries: retried,
        serverOpenFileLimit: await openFileLimit(node.pid),
        serverEnv: NODE_DEFAULTS,
      }];
    }));
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[sorted.length >> 1];
}

/** The node's own memory gauges from /metrics (rss, heap_total, heap_used, external). */
async function nodeMemory(node: ServerProcess): Promise<Record<string, number> | null> {
  try {
    const text = await (await fetch(`${node.url}/metrics`)).text();
    const out: Record<string, number> = {};
    for (const m of text.matchAll(/^parley_memory_bytes\{kind="(\w+)"\} (\S+)$/gm)) {
      out[m[1]] = Number(m[2]);
    }
    return "heap_used" in out ? out : null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// sigterm

export async function sigterm(ctx: Context): Promise<Entry[]> {
  const n = ctx.profile.sigterm.connections;
  const retried: Record<string, number> = {};
  return await withDatabase(ctx, "sigterm", (db) =>
    scoped(async (stack) => {
      const node = stack.push(await startNode(db.url, "bench-sigterm"), stopServer);
      const pool = stack.push(await fillPool(ctx, n), stopPool);
      const users = await seedUsers(db.sql, "t", n);
      await connectAll(
        pool.all,
        node,
        "parley",
        deal(users, pool.size).map((h) => h.map(byToken)),
        { concurrency: FILL_CONCURRENCY, retried, deadlineMs: 300_000 },
      );
      const onlineBefore = await onlineCount(db.sql);
      ctx.log(`sigterm: ${n} sockets`);
      const started = performance.now();
      node.kill("SIGTERM");
      const status = await Promise.race([
        node.exited(),
        sleep(30_000).then(() => null),
      ]);
      const drainMs = performance.now() - started;
      const onlineAfter = await onlineCount(db.sql);
      const closes = await Promise.all(pool.all.map((g) => g.waitClosed(10_000)));
      const drained = node.logs.find((l) => l.event === "node.drained");
      return [{
        name: "sigterm",
        connections: n,
        drainMs: status ? Math.round(drainMs) : null,
        exitCode: status?.code ?? null,
        onlineBefore,
        onlineAfter,
        closedWith1001: sum(closes.map((c) => c.closeCodes["1001"] ?? 0)),
        stillOpen: sum(closes.map((c) => c.open)),
        serverDrainLogMs: typeof drained?.ms === "number" ? drained.ms : null,
        loadgens: pool.size,
        loginRetries: retried,
        serverEnv: NODE_DEFAULTS,
      }];
    }));
}

// ---------------------------------------------------------------------------------------------
// sigkill

export async function sigkill(ctx: Context): Promise<Entry[]> {
  const p = ctx.profile.sigkill;
  const ttl = Number(NODE_DEFAULTS.NODE_TTL_MS);
  const pollEveryMs = 20;
  const retried: Record<string, number> = {};
  return await withDatabase(ctx, "sigkill", (db) =>
    scoped(async (stack) => {
      const survivor = stack.push(await startNode(db.url, "bench-kill-b"), stopServer);
      const pool = stack.push(await fillPool(ctx, p.users + p.survivors), stopPool);
      const users = await seedUsers(db.sql, "k", p.users);
      const others = await seedUsers(db.sql, "s", p.survivors);
      const ids = users.map((u) => u.id);
      const otherIds = others.map((u) => u.id);
      await connectAll(
        pool.all,
        survivor,
        "parley",
        deal(others, pool.size).map((h) => h.map(byToken)),
        { concurrency: FILL_CONCURRENCY, retried, deadlineMs: 60_000 },
      );

      /** Fills a fresh node with the users, ends it with `signal`, and times the way to offline. */
      const once = async (label: string, signal: "SIGKILL" | "SIGSTOP") => {
        const node = stack.push(await startNode(db.url, `bench-kill-${label}`), stopServer);
        await connectAll(
          pool.all,
          node,
          "parley",
          deal(users, pool.size).map((h) => h.map(byToken)),
          { concurrency: FILL_CONCURRENCY, retried, deadlineMs: 120_000 },
        );
        const onlineBefore = await onlineCount(db.sql, ids);
        ctx.log(`sigkill: ${signal} with ${p.users} users (${label})`);
        const started = performance.now();
        node.kill(signal);
        const tookMs = await waitForOnline(db.sql, ids, 0, ttl + 10_000, pollEveryMs, started);
        // A stopped process still holds its sockets and lock: end it for real now.
        if (signal === "SIGSTOP") node.kill("SIGKILL");
        await node.exited();
        await Promise.all(pool.all.map((g) => g.waitClosed(10_000, node.wsUrl)));
        return {
          name: "sigkill",
          detection: signal === "SIGKILL" ? "lock" : "lease",
          signal,
          users: p.users,
          offlineAfterMs: tookMs === null ? null : Math.round(tookMs),
          onlineBefore,
          survivors: p.survivors,
          survivorsOnlineAfter: await onlineCount(db.sql, otherIds),
          pollEveryMs,
          heartbeatMs: Number(NODE_DEFAULTS.HEARTBEAT_MS),
          nodeTtlMs: ttl,
          loadgens: pool.size,
          loginRetries: retried,
          serverEnv: NODE_DEFAULTS,
        };
      };

      // One kill is one draw of where the survivor's watcher and heartbeat stood: the median of
      // several is the figure.
      const kills: Entry[] = [];
      for (let k = 1; k <= p.kills; k++) kills.push(await once(`a${k}`, "SIGKILL"));
      const each = kills.map((e) => e.offlineAfterMs as number | null);
      const measured = each.filter((v): v is number => v !== null).sort((x, y) => x - y);
      const entries: Entry[] = [{
        ...kills[kills.length - 1],
        kills: kills.length,
        offlineAfterMs: measured.length === kills.length ? percentile(measured, 50) : null,
        offlineAfterMsEach: each,
        offlineAfterMsMax: measured.length > 0 ? measured[measured.length - 1] : null,
        onlineBefore: Math.min(...kills.map((e) => e.onlineBefore as number)),
        survivorsOnlineAfter: Math.min(...kills.map((e) => e.survivorsOnlineAfter as number)),
      }];
      // The lock-free path: a frozen process keeps its connection, so only the lease expires it,
      // as when a host vanishes or the network is cut.
      if (p.lease) entries.push(await once("a2", "SIGSTOP"));
      return entries;
    }));
}

export const RUNNERS: Record<string, (ctx: Context) => Promise<Entry[]>> = {
  direct,
  latency,
  cross,
  cluster,
  group,
  logins,
  idle,
  sigterm,
  sigkill,
  course: (ctx) =>
    courseScenario(ctx, { ...ctx.profile.course, deadlineMs: ctx.profile.runDeadlineMs }),
};
