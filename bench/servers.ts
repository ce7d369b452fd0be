/**
 * @module The processes under test: Parley nodes (`src/main.ts serve`) and the raw relay, started
 * through a shell that raises the open-file limit first, and read from /proc for memory and CPU.
 */
import { type ServerProcess, startServer } from "../tests/support/server.ts";

export type { ServerProcess };

const MAIN = new URL("../src/main.ts", import.meta.url).pathname;
const RAW_RELAY = new URL("./raw_relay.ts", import.meta.url).pathname;

/**
 * `sh -c` arguments that raise the soft open-file limit, to 65536 where allowed, else to the hard
 * limit (a container may forbid raising that), then exec the command so that signals reach it.
 */
export function withOpenFileLimit(command: string[]): string[] {
  return [
    "-c",
    'ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$0" "$@"',
    ...command,
  ];
}

/**
 * The settings every bench node gets: the production defaults for timing (the test fixture's are
 * shorter), written out so that the results say what was measured.
 */
export const NODE_DEFAULTS: Record<string, string> = {
  LOG_LEVEL: "info",
  HEARTBEAT_MS: "1000",
  NODE_TTL_MS: "15000",
  PRESENCE_GRACE_MS: "3000",
  SHUTDOWN_TIMEOUT_MS: "8000",
  LOGIN_POLICY: "reject",
};

/** Rate limits out of the way, for scenarios that measure throughput rather than the limiter. */
export const GENEROUS_LIMITS: Record<string, string> = {
  RATE_LIMIT_PER_SEC: "1000000",
  RATE_LIMIT_BURST: "1000000",
};

/**
 * Extra `deno run` flags for the nodes, e.g. BENCH_DENO_FLAGS="--cpu-prof --cpu-prof-dir=/tmp/prof"
 * to see where a node's time goes.
 */
const EXTRA_FLAGS = (Deno.env.get("BENCH_DENO_FLAGS") ?? "").split(/\s+/).filter(Boolean);

export async function startNode(
  databaseUrl: string,
  nodeId: string,
  env: Record<string, string> = {},
): Promise<ServerProcess> {
  return await startServer({
    databaseUrl,
    nodeId,
    env: { ...NODE_DEFAULTS, ...env },
    command: {
      cmd: "sh",
      args: withOpenFileLimit([
        Deno.execPath(),
        "run",
        "-A",
        "--quiet",
        ...EXTRA_FLAGS,
        MAIN,
        "serve",
      ]),
    },
  });
}

export async function startRawRelay(): Promise<ServerProcess> {
  return await startServer({
    command: {
      cmd: "sh",
      args: withOpenFileLimit([Deno.execPath(), "run", "-A", "--quiet", RAW_RELAY]),
    },
  });
}

/** Resident memory of a process, in bytes (VmRSS in /proc/<pid>/status). */
export async function rssBytes(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const kib = status.match(/^VmRSS:\s+(\d+)\s+kB/m)?.[1];
  if (kib === undefined) throw new Error(`No VmRSS in /proc/${pid}/status: is the process alive?`);
  return Number(kib) * 1024;
}

/** CPU time (user plus system) a process has used, in milliseconds. */
export async function cpuMs(pid: number): Promise<number> {
  return parseStat(await Deno.readTextFile(`/proc/${pid}/stat`)).cpuMs;
}

function parseStat(stat: string): { command: string; cpuMs: number } {
  // The command name sits in parentheses and may itself hold spaces or parentheses.
  const open = stat.indexOf("(");
  const close = stat.lastIndexOf(")");
  const fields = stat.slice(close + 2).split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]);
  return { command: stat.slice(open + 1, close), cpuMs: (ticks * 1000) / CLOCK_TICKS };
}

/**
 * CPU time used so far by each of `pids` that runs `command` ("postgres" for the database's
 * backends), in milliseconds; pids that are gone or run something else (a database on another
 * host, whose pids mean nothing here) are left out.
 */
export async function cpuByPid(pids: number[], command: string): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  for (const pid of pids) {
    try {
      const stat = parseStat(await Deno.readTextFile(`/proc/${pid}/stat`));
      if (stat.command === command) out.set(pid, stat.cpuMs);
    } catch {
      // The process ended, or is not on this host.
    }
  }
  return out;
}

/**
 * The whole machine's CPU counters from /proc/stat, in clock ticks: busy (all but idle and iowait)
 * and total. The bench shares the machine with whatever else runs, and this shows how much did.
 */
export async function machineTicks(): Promise<{ busy: number; total: number }> {
  const line = (await Deno.readTextFile("/proc/stat")).split("\n")[0];
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = sum(v.slice(0, 8));
  return { busy: total - v[3] - v[4], total };
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

/** Linux reports CPU time in clock ticks, 100 a second on every common build. */
const CLOCK_TICKS = 100;

/** The soft open-file limit a process runs with. */
export async function openFileLimit(pid: number): Promise<number | null> {
  const limits = await Deno.readTextFile(`/proc/${pid}/limits`).catch(() => "");
  const soft = limits.match(/^Max open files\s+(\d+)/m)?.[1];
  return soft === undefined ? null : Number(soft);
}
