/** @module The human-readable table of a bench run: one line per entry, parameters beside figures. */
import type { Entry } from "./scenarios.ts";

interface Results {
  runAt: string;
  profile: string;
  machine: {
    cpus: number;
    memory: number;
    deno: string;
    postgres: string;
    cpuModel: string | null;
  };
  database: { provider: string; fsync: string; synchronousCommit: string; durable?: boolean };
  source: { commit: string | null; srcChanged: boolean | null };
  scenarios: Entry[];
}

const n = (v: unknown) =>
  typeof v === "number" ? v.toLocaleString("en-US", { maximumFractionDigits: 2 }) : String(v);
const msOf = (v: unknown) => (typeof v === "number" ? `${n(v)} ms` : "-");
const bytes = (
  v: unknown,
) => (typeof v === "number" ? `${n(Math.round(v / 102.4) / 10)} KiB` : "-");

/** Counts such as errors, shown only when there are any. */
function counts(label: string, v: unknown): string {
  if (!v || typeof v !== "object" || Object.keys(v).length === 0) return "";
  return `, ${label} ${JSON.stringify(v)}`;
}

/** The latency scenario's warm-up, reported apart from the measured run. */
function warmup(v: unknown): string {
  if (!v || typeof v !== "object") return "";
  const w = v as { durationMs?: unknown; p99Ms?: unknown };
  return `; warm-up ${n(w.durationMs)} ms before: p99 ${msOf(w.p99Ms)}`;
}

/** Marks a run that did not see every receipt it expected. */
function flags(t: Entry): string {
  return (t.timedOut ? ", TIMED OUT" : "") + (t.stalled ? ", STALLED (receipts missing)" : "");
}

function describe(e: Entry): [string, string, string] {
  if (typeof e.error === "string") return [e.name, "", `FAILED: ${e.error}`];
  switch (e.name) {
    case "direct": {
      const p = e.persisted as Entry;
      const r = e.raw as Entry;
      return [
        `direct w${e.window}`,
        `${e.users} users, ${n(e.messages)} msgs`,
        `${n(e.persistedMsgsPerSec)} msg/s p50 ${msOf(e.p50Ms)} p99 ${msOf(e.p99Ms)} | raw ${
          n(e.rawRelayMsgsPerSec)
        } msg/s p99 ${msOf(r.p99Ms)} | ratio ${n(e.ratio)}; delivered ${p.delivered}/${p.sent}` +
        counts("errors", p.errors) + flags(p),
      ];
    }
    case "latency":
      return [
        "latency",
        `${n(e.offeredMsgsPerSec)} msg/s offered for ${n(e.durationMs)} ms`,
        `p50 ${msOf(e.p50Ms)} p99 ${msOf(e.p99Ms)} max ${msOf(e.maxMs)}; achieved ${
          n(e.achievedMsgsPerSec)
        } msg/s, delivered ${e.delivered}/${e.sent}` + counts("errors", e.errors) +
        flags(e) +
        warmup(e.warmup),
      ];
    case "cross":
      return [
        `cross w${e.window}`,
        `${e.users} users, ${n(e.messages)} msgs, A->B`,
        `${n(e.msgsPerSec)} msg/s p50 ${msOf(e.p50Ms)} p99 ${
          msOf(e.p99Ms)
        }; delivered ${e.delivered}/${e.sent}` +
        counts("errors", e.errors) + flags(e),
      ];
    case "cluster": {
      const per = e.busMessagesPerDelivered as Record<string, number | null>;
      return [
        `cluster ${e.bus}`,
        `3 nodes, ${e.users} users A<->B, ${e.idleOnC} idle on C, ${n(e.messages)} msgs`,
        `${n(e.msgsPerSec)} msg/s p50 ${msOf(e.p50Ms)} p99 ${msOf(e.p99Ms)}; bus msgs in per ` +
        `delivered A ${n(per.a)} B ${n(per.b)} C ${n(per.c)}; delivered ${e.delivered}/${e.sent}` +
        counts("errors", e.errors) + flags(e),
      ];
    }
    case "group":
      return [
        "group",
        `${e.members} members, ${n(e.messages)} msgs, ${e.senders} senders`,
        `${n(e.deliveriesPerSec)} deliveries/s p50 ${msOf(e.p50Ms)} p99 ${
          msOf(e.p99Ms)
        }; delivered ${n(e.delivered)}/${n(e.expected)}` + counts("errors", e.errors) +
        flags(e),
      ];
    case "logins":
      return [
        `logins ${e.method}`,
        `${n(e.count)} logins, ${n(e.concurrency)} at a time`,
        `total ${msOf(e.totalMs)} (${n(e.loginsPerSec)}/s) p50 ${msOf(e.p50Ms)} p99 ${
          msOf(e.p99Ms)
        }; ok ${e.ok}` + counts("failed", e.failed),
      ];
    case "idle":
      return [
        "idle",
        `${n(e.connections)} sockets`,
        `${bytes(e.rssBytesPerConn)} RSS per socket idle (${bytes(e.rssBeforeBytes)} -> ${
          bytes(e.rssAfterBytes)
        }), ${bytes(e.rssBytesPerConnAfterFill)} right after the fill; online ${
          n(e.onlineInUserState)
        }`,
      ];
    case "sigterm":
      return [
        "sigterm",
        `${n(e.connections)} sockets`,
        `exit ${e.exitCode} after ${msOf(e.drainMs)}; online after ${e.onlineAfter}, 1001 closes ${
          n(e.closedWith1001)
        }`,
      ];
    case "sigkill":
      return [
        `sigkill ${e.detection}`,
        `${n(e.users)} users, ${e.signal}, 2nd node alive`,
        `offline after ${msOf(e.offlineAfterMs)}${
          e.kills ? ` (median of ${e.kills}, max ${msOf(e.offlineAfterMsMax)})` : ""
        }; survivors online ${e.survivorsOnlineAfter}/${e.survivors}`,
      ];
    case "course": {
      const p = e.parley as Entry;
      const c = e.course as Entry | null;
      const other = c && typeof c.error === "string"
        ? ` | ${e.courseServer}: FAILED ${c.error}`
        : c
        ? ` | ${e.courseServer} ${n(c.msgsPerSec)} msg/s p99 ${msOf(c.p99Ms)} lost ${c.lost}${
          c.closedByServer ? `, ${c.closedByServer} connections closed` : ""
        } | ratio ${n(e.ratio)}`
        : "";
      return [
        `course w${e.window}`,
        `${e.users} users, ${n(e.messages)} msgs, TCP`,
        `${n(p.msgsPerSec)} msg/s p50 ${msOf(p.p50Ms)} p99 ${
          msOf(p.p99Ms)
        }; received ${p.received}/${p.expected}, lost ${p.lost}` +
        other,
      ];
    }
    default:
      return [e.name, "", JSON.stringify(e)];
  }
}

export function formatTable(r: Results): string {
  const rows = r.scenarios.map(describe);
  const widths = [0, 1].map((i) => Math.max(...rows.map((row) => row[i].length), 8));
  const head = [
    `Parley bench, ${r.profile} profile, ${r.runAt}`,
    `machine: ${r.machine.cpus} CPUs (${r.machine.cpuModel ?? "?"}), ${
      n(Math.round(r.machine.memory / 2 ** 28) / 4)
    } GiB memory, Deno ${r.machine.deno}, PostgreSQL ${r.machine.postgres}`,
    `database: ${
      r.database.durable ? "durable" : "NOT durable"
    } (${r.database.provider}, fsync=${r.database.fsync}, synchronous_commit=${r.database.synchronousCommit})`,
    `source: ${r.source.commit ?? "?"}${
      r.source.srcChanged ? " with uncommitted changes in src/" : ""
    }`,
    "",
  ];
  const lines = rows.map((row) =>
    `${row[0].padEnd(widths[0])}  ${row[1].padEnd(widths[1])}  ${row[2]}`
  );
  return [...head, ...lines].join("\n");
}
