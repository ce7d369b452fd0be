/**
 * @module The `deno task test` command: provides PostgreSQL, runs `deno test`, reports, cleans up.
 * With `--containers` first (`deno task test:containers`) it runs the container lane instead,
 * tests/containers/lane.ts, which brings its own PostgreSQL in containers: no provider then.
 */

import { type ProvidedPostgres, providePostgres } from "./support/postgres.ts";

const SIGNAL_CODES = { SIGINT: 130, SIGTERM: 143 } as const;
type StopSignal = keyof typeof SIGNAL_CODES;
const SIGNAL_ECHO_MS = 500;

type Summary = { passed: number; failed: number; ignored: number };

const log = (line: string) => console.error(`[tests] ${line}`);

// Shared with the signal listeners, which may fire at any point of the run.
const run: {
  postgres?: ProvidedPostgres;
  child?: Deno.ChildProcess;
  interrupted?: StopSignal;
  interruptedAt?: number;
  finishing?: Promise<never>;
} = {};

// A first signal lets deno test finish its own teardown (it gets the signal from the terminal too,
// or from us), so the run still ends through the normal path that stops PostgreSQL. A second
// signal kills the tests and stops PostgreSQL at once. Once testcontainers is loaded, signal-exit
// re-raises every signal it sees a few milliseconds later: that echo is not a second signal.
for (const signal of Object.keys(SIGNAL_CODES) as StopSignal[]) {
  Deno.addSignalListener(signal, () => {
    if (run.interrupted && performance.now() - (run.interruptedAt ?? 0) < SIGNAL_ECHO_MS) return;
    if (run.interrupted) {
      log(`${signal} again: killing deno test and stopping PostgreSQL`);
      killChild("SIGKILL");
      void finish(SIGNAL_CODES[signal]);
      return;
    }
    run.interrupted = signal;
    run.interruptedAt = performance.now();
    const waitingFor = run.child ? "deno test to stop" : "PostgreSQL to start, to stop it";
    log(`${signal}: waiting for ${waitingFor} (send it again to stop at once)`);
    killChild(signal);
  });
}

const containerLane = Deno.args[0] === "--containers";
const env: Record<string, string> = {};
if (containerLane) {
  console.log("postgres: none from the runner (the container lane runs its own in compose)");
} else {
  try {
    run.postgres = await providePostgres(log);
  } catch (error) {
    log(error instanceof Error ? error.message : String(error));
    Deno.exit(run.interrupted ? SIGNAL_CODES[run.interrupted] : 1);
  }
  const postgres = run.postgres;
  // On stdout, where a CI log shows it beside the summary: which of the three providers ran.
  const PROVIDER_NAMES = { env: "DATABASE_URL", testcontainers: "testcontainers", local: "local" };
  console.log(`postgres: ${PROVIDER_NAMES[postgres.provider]}`);
  env.PARLEY_TEST_ADMIN_URL = postgres.url;
  env.PARLEY_TEST_PG_PROVIDER = postgres.provider;
  if (postgres.dataDir) env.PARLEY_TEST_PG_DATADIR = postgres.dataDir;
  if (postgres.containerId) env.PARLEY_TEST_PG_CONTAINER = postgres.containerId;
}
if (run.interrupted) await finish(SIGNAL_CODES[run.interrupted]);

const args = containerLane
  ? ["tests/containers/lane.ts", ...Deno.args.slice(1)]
  : Deno.args.length > 0
  ? Deno.args
  : ["tests/"];

const child = new Deno.Command(Deno.execPath(), {
  args: ["test", "--allow-all", "--frozen", ...args],
  env,
  stdin: "null",
  stdout: "piped",
  stderr: "inherit",
}).spawn();
run.child = child;

const summary = await teeAndFindSummary(child.stdout);
const status = await child.status;

let code = status.code;
if (!summary) {
  const why = run.interrupted ? `interrupted by ${run.interrupted}` : "ended without printing it";
  console.log(`No test summary: deno test ${why}`);
  if (code === 0) code = 1;
} else {
  const skipped = summary.ignored > 0 ? `, ${summary.ignored} skipped` : "";
  console.log(`${summary.passed} passed, ${summary.failed} failed${skipped}`);
  if (summary.passed + summary.failed === 0 && code === 0) {
    log(`No tests ran for "${args.join(" ")}"`);
    code = 1;
  }
}
if (run.interrupted && code === 0) code = SIGNAL_CODES[run.interrupted];
await finish(code);

function killChild(signal: Deno.Signal) {
  try {
    run.child?.kill(signal);
  } catch {
    // The child has already exited.
  }
}

/** Copies the child's stdout through unchanged while reading its summary line. */
async function teeAndFindSummary(stdout: ReadableStream<Uint8Array>): Promise<Summary | undefined> {
  const decoder = new TextDecoder();
  let pending = "";
  let found: Summary | undefined;
  for await (const chunk of stdout) {
    await writeAll(Deno.stdout, chunk);
    pending += decoder.decode(chunk, { stream: true });
    const lines = pending.split("\n");
    pending = lines.pop() ?? "";
    for (const line of lines) found = parseSummary(line) ?? found;
  }
  return parseSummary(pending + decoder.decode()) ?? found;
}

function parseSummary(line: string): Summary | undefined {
  // deno test prints e.g. "FAILED | 2 passed (1 step) | 1 failed | 1 ignored (9ms)", coloured.
  // deno-lint-ignore no-control-regex
  const plain = line.replace(/\x1b\[[0-9;]*m/g, "").trim();
  if (!/^(ok|FAILED) \| \d+ passed\b/.test(plain)) return undefined;
  const count = (word: string) => Number(plain.match(new RegExp(`(\\d+) ${word}\\b`))?.[1] ?? 0);
  return { passed: count("passed"), failed: count("failed"), ignored: count("ignored") };
}

async function writeAll(writer: { write(p: Uint8Array): Promise<number> }, bytes: Uint8Array) {
  for (let done = 0; done < bytes.length;) done += await writer.write(bytes.subarray(done));
}

/** Stops PostgreSQL once, however many paths ask, then exits with `exitCode`. */
function finish(exitCode: number): Promise<never> {
  return run.finishing ??= (async () => {
    try {
      await run.postgres?.stop();
    } catch (error) {
      log(`Could not stop PostgreSQL: ${error instanceof Error ? error.message : error}`);
      if (exitCode === 0) exitCode = 1;
    }
    Deno.exit(exitCode);
  })();
}
