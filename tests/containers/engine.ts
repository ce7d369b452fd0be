/**
 * @module The container engine the lane drives: the `docker` CLI and its compose plugin, talking
 * to Docker or to rootful podman's Docker-compatible socket, whichever answers. No engine is a
 * failure with a sentence saying how to provide one, never a skip.
 */

export type Engine = {
  /** What answered: Docker itself, or podman through its Docker API. */
  kind: "docker" | "podman";
  /** Environment for every docker/compose command (DOCKER_HOST, DOCKER_BUILDKIT). */
  env: Record<string, string>;
  version: string;
};

const PODMAN_SOCKET = "/run/podman/podman.sock";
const ANSWER_MS = 15_000;

export const HOW_TO_PROVIDE =
  "The container lane needs a container engine and the docker CLI with its compose plugin: " +
  "start Docker (docker info must answer), or serve rootful podman's Docker-compatible API " +
  `(podman system service --time=0 unix://${PODMAN_SOCKET} &, then ` +
  `DOCKER_HOST=unix://${PODMAN_SOCKET}) with the compose plugin installed; on Debian 12, ` +
  "bash .ci/run installs and starts all of it";

let found: Promise<Engine> | undefined;

/** Finds the engine once per run; rejects with HOW_TO_PROVIDE and what was missing. */
export function engine(): Promise<Engine> {
  return found ??= findEngine();
}

async function findEngine(): Promise<Engine> {
  const env: Record<string, string> = {};
  // DOCKER_HOST wins; else Docker's own socket; else podman's, where .ci/run serves it.
  if (!Deno.env.get("DOCKER_HOST") && !await exists("/var/run/docker.sock")) {
    if (await exists(PODMAN_SOCKET)) env.DOCKER_HOST = `unix://${PODMAN_SOCKET}`;
  }
  const server = await docker(
    { kind: "docker", env, version: "" },
    ["version", "--format", "{{json .Server}}"],
    { ms: ANSWER_MS },
  ).catch((error) => {
    throw new Error(`${HOW_TO_PROVIDE} (docker version: ${message(error)})`);
  });
  const info = JSON.parse(server) as { Version?: string; Components?: { Name?: string }[] };
  const podman = (info.Components ?? []).some((c) => /podman/i.test(c.Name ?? ""));
  // podman has no BuildKit: compose would try to start a moby/buildkit container.
  if (podman) env.DOCKER_BUILDKIT = "0";
  const found: Engine = { kind: podman ? "podman" : "docker", env, version: info.Version ?? "?" };
  await docker(found, ["compose", "version"], { ms: ANSWER_MS }).catch((error) => {
    throw new Error(`${HOW_TO_PROVIDE} (docker compose version: ${message(error)})`);
  });
  return found;
}

/**
 * Runs `docker ARGS` against the engine and resolves with its trimmed stdout; rejects with its
 * stderr when it fails or outlives `ms` (then it is killed).
 */
export async function docker(
  engine: Engine,
  args: string[],
  { ms = 120_000, env = {} }: { ms?: number; env?: Record<string, string> } = {},
): Promise<string> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("docker", {
      args,
      env: { ...engine.env, ...env },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) throw new Error("no docker CLI on PATH");
    throw error;
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((resolve) => timer = setTimeout(() => resolve("late"), ms));
  const output = child.output();
  const first = await Promise.race([output, late]);
  clearTimeout(timer);
  if (first === "late") {
    try {
      child.kill("SIGKILL");
    } catch {
      // It ended meanwhile.
    }
    await output;
    throw new Error(`docker ${args.join(" ")} did not end within ${ms} ms`);
  }
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes).trim();
  if (!first.success) {
    throw new Error(
      `docker ${args.join(" ")} exited with code ${first.code}: ` +
        (decode(first.stderr) || decode(first.stdout) || "no output"),
    );
  }
  return decode(first.stdout);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

export function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
