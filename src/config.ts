/**
 * @module Settings: every environment variable Parley reads, parsed once at start, validated and
 * frozen. A wrong value stops the process with a sentence naming the variable and its value.
 */
import { z } from "zod";

/** One setting: its variable, default (as the text a user would write), meaning and parser. */
interface Setting<T> {
  readonly name: string;
  readonly default: string;
  readonly meaning: string;
  readonly schema: z.ZodType<T>;
}

const wholeMs = (min: number) =>
  z.string().regex(/^\d+$/, "expected a whole number of milliseconds").transform(Number).pipe(
    z.number().min(min, `expected at least ${min} milliseconds`).max(
      2 ** 31 - 1,
      "expected at most 2147483647 milliseconds",
    ),
  );

const count = (min: number, max: number, unit: string) =>
  z.string().regex(/^\d+$/, `expected a whole number of ${unit}`).transform(Number).pipe(
    z.number().min(min, `expected at least ${min} ${unit}`).max(
      max,
      `expected at most ${max} ${unit}`,
    ),
  );

const port = z.string().regex(/^\d+$/, "expected a port number from 0 to 65535").transform(
  Number,
).pipe(z.number().max(65535, "expected a port number from 0 to 65535"));

const databaseUrl = z.string().regex(
  /^postgres(ql)?:\/\/\S+$/,
  "expected a URL such as postgres://user:password@host:5432/db",
);

const origins = z.string().transform((s) => s.split(",").map((o) => o.trim()).filter(Boolean))
  .pipe(
    z.array(z.url({ protocol: /^https?$/, error: "expected http(s) origins separated by commas" })),
  )
  .transform((list) => list.map((o) => new URL(o).origin));

/** `nats://host:port`, one or more separated by commas: the servers of one NATS cluster. */
const natsServers = z.string().transform((s) => s.split(",").map((u) => u.trim())).pipe(
  z.array(
    z.string().refine((u) => {
      const m = /^nats:\/\/([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):(\d{1,5})\/?$/.exec(u);
      return m !== null && Number(m[2]) >= 1 && Number(m[2]) <= 65535;
    }, "expected nats://host:port, several separated by commas"),
  ),
);

const setting = <T>(s: Setting<T>): Setting<T> => s;

/** The table of settings; the README's configuration table is checked against it by a test. */
export const SETTINGS = {
  databaseUrl: setting({
    name: "DATABASE_URL",
    default: "",
    meaning: "PostgreSQL server to use; empty runs the embedded database in DATA_DIR",
    schema: databaseUrl.optional(),
  }),
  dataDir: setting({
    name: "DATA_DIR",
    default: "./data",
    meaning: "where the embedded database keeps its files (only without DATABASE_URL)",
    schema: z.string().regex(
      /^[^\p{Cc}]+$/u,
      "expected a directory path without control characters",
    ),
  }),
  host: setting({
    name: "HOST",
    default: "0.0.0.0",
    meaning: "address the HTTP and WebSocket server listens on",
    schema: z.string().regex(/^[A-Za-z0-9.:_-]+$/, "expected a host name or IP address"),
  }),
  port: setting({
    name: "PORT",
    default: "8080",
    meaning: "HTTP and WebSocket port (0 picks a free one)",
    schema: port,
  }),
  nodeId: setting({
    name: "NODE_ID",
    default: "the host name",
    meaning: "this node's name in the cluster; a restarted container keeps it",
    schema: z.string().regex(
      /^[A-Za-z0-9_.-]{1,64}$/,
      "expected 1 to 64 letters, digits, '_', '-' or '.'",
    ),
  }),
  loginPolicy: setting({
    name: "LOGIN_POLICY",
    default: "reject",
    meaning: "a second login of an online user: reject, takeover (close the old socket) or multi",
    schema: z.enum(["reject", "takeover", "multi"], {
      error: "expected one of reject, takeover, multi",
    }),
  }),
  heartbeatMs: setting({
    name: "HEARTBEAT_MS",
    default: "1000",
    meaning: "how often a node renews its lease and reaps dead nodes",
    schema: wholeMs(50),
  }),
  nodeTtlMs: setting({
    name: "NODE_TTL_MS",
    default: "15000",
    meaning: "a node whose lease is older than this counts as dead, with all its sessions",
    schema: wholeMs(200),
  }),
  idleTimeoutMs: setting({
    name: "IDLE_TIMEOUT_MS",
    default: "30000",
    meaning: "a socket that answers no ping within this is closed as dead",
    schema: wholeMs(1000),
  }),
  shutdownTimeoutMs: setting({
    name: "SHUTDOWN_TIMEOUT_MS",
    default: "8000",
    meaning: "longest drain on SIGINT/SIGTERM before the process exits anyway",
    schema: wholeMs(100),
  }),
  authTimeoutMs: setting({
    name: "AUTH_TIMEOUT_MS",
    default: "10000",
    meaning: "a socket that has not logged in within this is closed with 1008",
    schema: wholeMs(100),
  }),
  presenceGraceMs: setting({
    name: "PRESENCE_GRACE_MS",
    default: "3000",
    meaning: "offline pushes wait this long and are dropped if the user is back",
    schema: wholeMs(0),
  }),
  maxFrameBytes: setting({
    name: "MAX_FRAME_BYTES",
    default: "65536",
    meaning: "largest WebSocket frame accepted; a larger one closes the socket with 1009",
    schema: count(256, 16 * 1024 * 1024, "bytes"),
  }),
  maxConnections: setting({
    name: "MAX_CONNECTIONS",
    default: "20000",
    meaning: "open WebSockets per node; upgrades beyond it answer 503",
    schema: count(1, 1_000_000, "connections"),
  }),
  rateLimitPerSec: setting({
    name: "RATE_LIMIT_PER_SEC",
    default: "30",
    meaning: "requests per second a socket may make on average",
    schema: count(1, 1_000_000, "requests"),
  }),
  rateLimitBurst: setting({
    name: "RATE_LIMIT_BURST",
    default: "60",
    meaning: "requests a socket may make at once before the average applies",
    schema: count(1, 1_000_000, "requests"),
  }),
  loginFailuresPerMin: setting({
    name: "LOGIN_FAILURES_PER_MIN",
    default: "10",
    meaning: "failed logins per name and per client address per minute before rate_limited",
    schema: count(1, 1_000_000, "attempts"),
  }),
  registrationsPerMin: setting({
    name: "REGISTRATIONS_PER_MIN",
    default: "30",
    meaning: "registrations per client address per minute",
    schema: count(1, 1_000_000, "registrations"),
  }),
  tokenTtlMs: setting({
    name: "TOKEN_TTL_MS",
    default: "2592000000",
    meaning: "how long a login token stays valid (30 days)",
    schema: z.string().regex(/^\d+$/, "expected a whole number of milliseconds").transform(Number)
      .pipe(
        z.number().min(1000, "expected at least 1000 milliseconds").max(
          Number.MAX_SAFE_INTEGER,
          "expected a smaller number of milliseconds",
        ),
      ),
  }),
  allowedOrigins: setting({
    name: "ALLOWED_ORIGINS",
    default: "",
    meaning: "browser origins allowed to open /ws, comma-separated; empty allows the server's own",
    schema: origins,
  }),
  legacyTcpPort: setting({
    name: "LEGACY_TCP_PORT",
    default: "",
    meaning: "port for the course client's TCP protocol; empty turns it off",
    schema: port.optional(),
  }),
  busUrl: setting({
    name: "BUS_URL",
    default: "",
    meaning: "NATS servers for the bus, nats://host:port, comma-separated; empty: LISTEN/NOTIFY",
    schema: natsServers.optional(),
  }),
  syncLimit: setting({
    name: "SYNC_LIMIT",
    default: "500",
    meaning: "most events of one conversation replayed to a device at login; history has the rest",
    schema: count(1, 100_000, "events"),
  }),
  logLevel: setting({
    name: "LOG_LEVEL",
    default: "info",
    meaning: "least severe log level written: debug, info, warn or error",
    schema: z.enum(["debug", "info", "warn", "error"], {
      error: "expected one of debug, info, warn, error",
    }),
  }),
} as const;

type Settings = typeof SETTINGS;
export type Config = Readonly<{ [K in keyof Settings]: z.output<Settings[K]["schema"]> }>;

/** A setting that does not parse; `message` is the sentence to show. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/**
 * Parses every setting from `env`. Empty variables count as unset. `hostname` is the default
 * NODE_ID, passed in so that this module reads nothing from the process itself.
 */
export function loadConfig(
  env: Readonly<Record<string, string | undefined>>,
  hostname: string,
): Config {
  const defaults: Partial<Record<keyof Settings, string>> = { nodeId: hostname };
  const out: Record<string, unknown> = {};
  for (const [key, s] of Object.entries(SETTINGS) as [keyof Settings, Setting<unknown>][]) {
    const given = env[s.name]?.trim();
    const text = given ? given : (defaults[key] ?? s.default);
    if (text === "" && s.schema.safeParse(undefined).success) {
      out[key] = undefined;
      continue;
    }
    const parsed = s.schema.safeParse(text);
    if (!parsed.success) {
      const why = parsed.error.issues[0]?.message ?? "invalid value";
      const source = given ? `${s.name} "${given}"` : `default ${s.name} "${text}"`;
      throw new ConfigError(`Invalid ${source}: ${why}`);
    }
    out[key] = parsed.data;
  }
  const config = out as Config;
  if (config.nodeTtlMs < 2 * config.heartbeatMs) {
    throw new ConfigError(
      `Invalid NODE_TTL_MS "${config.nodeTtlMs}": expected at least twice HEARTBEAT_MS (${config.heartbeatMs})`,
    );
  }
  if (config.busUrl && !config.databaseUrl) {
    throw new ConfigError(
      `Invalid BUS_URL "${
        config.busUrl.join(",")
      }": a NATS bus needs DATABASE_URL, since the embedded database serves one node`,
    );
  }
  return Object.freeze(config);
}

/** The settings table in Markdown, as the README shows it. */
export function settingsTable(): string {
  const rows = Object.values(SETTINGS).map((s) =>
    `| \`${s.name}\` | ${s.default === "" ? "(unset)" : `\`${s.default}\``} | ${s.meaning} |`
  );
  return ["| variable | default | meaning |", "|---|---|---|", ...rows].join("\n");
}
