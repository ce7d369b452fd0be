/**
 * @module The `deno task bench` command: provides PostgreSQL, runs the scenarios of issue 6 against
 * real server processes from separate load-generator processes, writes the results as JSON and
 * prints them as a table.
 *
 *   deno task bench [--quick | --tiny] [--only direct,idle,...] [--out PATH]
 *
 * Without --out, results go to bench/results/latest.json and a dated copy beside it; a run of some
 * scenarios (--only) writes the dated copy alone, and a --tiny run, which only proves the harness,
 * bench/results/tiny.json.
 */
import { type BenchPostgres, provideBenchPostgres } from "./database.ts";
import { type Profile, PROFILES, type ScenarioName, SCENARIOS } from "./profiles.ts";
import { type Context, type Entry, RUNNERS } from "./scenarios.ts";
import { formatTable } from "./table.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const RESULTS = new URL("./results/", import.meta.url).pathname;

const USAGE =
  "Usage: deno task bench [--quick | --tiny] [--fast-db] [--only direct,latency,...] [--out PATH] " +
  "[--course-server HOST:PORT]";

export interface Options {
  profile: Profile;
  only: ScenarioName[];
  out?: string;
  /** A local cluster without fsync and synchronous_commit: faster, and not durable. */
  fastDb: boolean;
  /** Another course-protocol server for the `course` scenario to measure in the same run. */
  courseServer?: string;
}

export class UsageError extends Error {
  override name = "UsageError";
}

export function parseArgs(args: readonly string[]): Options {
  let profile: Profile = PROFILES.full;
  let only: ScenarioName[] = [...SCENARIOS];
  let out: string | undefined;
  let fastDb = false;
  let courseServer: string | undefined;
  // `deno task bench -- --quick` hands the script a literal "--": it means nothing here.
  const list = args.filter((a) => a !== "--");
  for (let i = 0; i < list.length; i++) {
    const arg = list[i];
    if (arg === "--quick") profile = PROFILES.quick;
    else if (arg === "--tiny") profile = PROFILES.tiny;
    else if (arg === "--fast-db") fastDb = true;
    else if (arg === "--only" || arg === "--out" || arg === "--course-server") {
      const value = list[++i];
      if (value === undefined) throw new UsageError(`Option "${arg}" needs a value: ${USAGE}`);
      if (arg === "--out") out = value;
      else if (arg === "--course-server") courseServer = value;
      else only = parseOnly(value);
    } else {
      throw new UsageError(`Unknown argument "${arg}": ${USAGE}`);
    }
  }
  return { profile, only, out, fastDb, courseServer };
}

function parseOnly(value: string): ScenarioName[] {
  const names = value.split(",").map((s) => s.trim()).filter(Boolean);
  for (const name of names) {
    if (!(SCENARIOS as readonly string[]).includes(name)) {
      throw new UsageError(`Unknown scenario "${name}": expected some of ${SCENARIOS.join(", ")}`);
    }
  }
  return names as ScenarioName[];
}

const log = (line: string) => console.error(`[bench] ${line}`);

async function machine(pg: BenchPostgres, loadAverageAtStart: number[]) {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  return {
    cpus: navigator.hardwareConcurrency,
    cpuModel: cpuinfo.match(/^model name\s*:\s*(.+)$/m)?.[1] ?? null,
    memory: Deno.systemMemoryInfo().total,
    os: `${Deno.build.os} ${Deno.osRelease()}`,
    deno: Deno.version.deno,
    postgres: pg.version,
    // Other work on the machine skews every figure; each traffic run also reports how busy it was.
    loadAverageAtStart,
  };
}

/** The commit measured, and whether src/ differed from it (another engineer may be editing it). */
async function source() {
  const git = async (...args: string[]) => {
    try {
      const out = await new Deno.Command("git", { args, cwd: ROOT, stderr: "null" }).output();
      return out.success ? new TextDecoder().decode(out.stdout).trim() : null;
    } catch {
      return null;
    }
  };
  const commit = await git("rev-parse", "HEAD");
  const changed = await git("status", "--porcelain", "--", "src");
  return { commit, srcChanged: changed === null ? null : changed.length > 0 };
}

/** `2026-01-31T12-34-56`: the run's time, safe as a file name. */
function stamp(iso: string): string {
  return iso.slice(0, 19).replaceAll(":", "-");
}

async function main(args: string[]): Promise<number> {
  let options: Options;
  try {
    options = parseArgs(args);
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(error.message);
      return 2;
    }
    throw error;
  }
  const { profile, only } = options;
  const started = performance.now();
  const runAt = new Date().toISOString();
  const loadAverage = Deno.loadavg();
  log(`profile ${profile.name}: ${only.join(", ")}`);
  const pg = await provideBenchPostgres(log, { fast: options.fastDb });
  const scenarios: Entry[] = [];
  let failed = 0;
  try {
    log(
      `PostgreSQL ${pg.version} from ${pg.provider}, fsync=${pg.fsync}, ` +
        `synchronous_commit=${pg.synchronousCommit}`,
    );
    const ctx: Context = { profile, pg, log, courseServer: options.courseServer };
    for (const name of only) {
      const t0 = performance.now();
      log(`${name}: starting`);
      try {
        const entries = await RUNNERS[name](ctx);
        const seconds = Math.round((performance.now() - t0) / 100) / 10;
        for (const entry of entries) scenarios.push({ ...entry, scenarioSeconds: seconds });
        log(`${name}: done in ${seconds} s`);
      } catch (error) {
        failed++;
        const message = error instanceof Error ? error.message : String(error);
        log(`${name}: failed: ${message}`);
        scenarios.push({ name, error: message });
      }
    }
    const results = {
      runAt,
      profile: profile.name,
      machine: await machine(pg, loadAverage),
      database: {
        // Durable: a commit is on disk before `sent`. --fast-db runs are not, and say so here.
        durable: pg.fsync === "on" && pg.synchronousCommit === "on",
        fastDbRequested: options.fastDb,
        provider: pg.provider,
        fsync: pg.fsync,
        synchronousCommit: pg.synchronousCommit,
        freshDatabasePerScenario: true,
      },
      source: await source(),
      durationSeconds: Math.round((performance.now() - started) / 1000),
      scenarios,
    };
    const text = JSON.stringify(results, null, 2) + "\n";
    const written: string[] = [];
    // A tiny run proves the harness, it measures nothing: it never replaces real results.
    const files = options.out
      ? [options.out]
      : profile.name === "tiny"
      ? [`${RESULTS}tiny.json`]
      : only.length < SCENARIOS.length
      // A partial run keeps its dated copy only: latest.json always holds a complete run.
      ? [`${RESULTS}${stamp(runAt)}.json`]
      : [`${RESULTS}latest.json`, `${RESULTS}${stamp(runAt)}.json`];
    for (const file of files) {
      if (file.startsWith(RESULTS)) await Deno.mkdir(RESULTS, { recursive: true });
      await Deno.writeTextFile(file, text);
      written.push(file.startsWith(ROOT) ? file.slice(ROOT.length) : file);
    }
    console.log(formatTable(results));
    console.log(`\nWritten: ${written.join(", ")} (${results.durationSeconds} s)`);
  } finally {
    await pg.stop().catch((error) => log(`Could not stop PostgreSQL: ${error}`));
  }
  return failed > 0 ? 1 : 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
