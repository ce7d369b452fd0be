/**
 * @module The terminal client's entry point (`deno task client`): reads its arguments and the
 * environment, builds the terminal and the client, and exits with the client's code.
 *
 *   deno task client [--url ws://host:port/ws]
 *   deno task client -- --url ws://host:port/ws
 *
 * Needs --allow-net (the server) and --allow-env (PARLEY_URL, the default for --url).
 */
import { ChatClient } from "./app.ts";
import { StdioTerminal } from "./terminal.ts";

const DEFAULT_URL = "ws://127.0.0.1:8080/ws";
const USAGE = "Usage: deno task client [--url ws://host:port/ws]";

const EXIT = { ok: 0, failed: 1, usage: 2 } as const;

export class UsageError extends Error {}

/**
 * The server's WebSocket URL from the arguments (a lone `--` is skipped, as `deno task` may pass
 * it on), else from PARLEY_URL, else the local default. An http(s) URL of the server is accepted
 * and pointed at its /ws.
 */
export function parseArgs(args: readonly string[], env: { url?: string } = {}): { url: string } {
  let url = env.url || DEFAULT_URL;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") continue;
    if (arg === "--url") {
      if (i + 1 >= args.length) throw new UsageError(`Missing value after --url\n${USAGE}`);
      url = args[++i];
    } else if (arg.startsWith("--url=")) {
      url = arg.slice("--url=".length);
    } else {
      throw new UsageError(`Unknown argument "${arg}"\n${USAGE}`);
    }
  }
  return { url: webSocketUrl(url) };
}

function webSocketUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`Invalid --url "${text}": expected ws://host:port/ws`);
  }
  if (url.protocol === "http:" || url.protocol === "https:") {
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    if (url.pathname === "/") url.pathname = "/ws";
  }
  if (url.protocol !== "ws:" && url.protocol !== "wss:") {
    throw new UsageError(`Invalid --url "${text}": expected a ws:// or wss:// URL`);
  }
  return url.href;
}

async function main(args: string[]): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(USAGE);
    return EXIT.ok;
  }
  let url: string;
  try {
    ({ url } = parseArgs(args, { url: Deno.env.get("PARLEY_URL") }));
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(error.message);
      return EXIT.usage;
    }
    throw error;
  }
  const terminal = new StdioTerminal();
  try {
    return await new ChatClient({ url, terminal }).run();
  } finally {
    terminal.close();
  }
}

if (import.meta.main) {
  let code: number;
  try {
    code = await main(Deno.args);
  } catch (error) {
    console.error(`The client failed: ${error instanceof Error ? error.message : error}`);
    code = EXIT.failed;
  }
  // Exit at once: a read of stdin may still be pending, and nothing else is left to finish.
  Deno.exit(code);
}
