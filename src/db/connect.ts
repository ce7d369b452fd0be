/**
 * @module Database connections: a PostgreSQL server from DATABASE_URL, or the embedded PGlite
 * served on a loopback port, both through the same `postgres` driver and the same SQL.
 */
import postgres from "postgres";
import type { Logger } from "../log.ts";

export type Sql = postgres.Sql;
export type TransactionSql = postgres.TransactionSql;
/** A handle that runs queries alike inside or outside a transaction. */
export type Querier = Sql | TransactionSql;

/**
 * postgres.js returns int8 as a string, to be safe past 2^53. Parley's ids and counts stay far
 * below that, and the wire wants JSON integers, so int8 is read as a number.
 */
const TYPES = {
  int8: {
    to: 20,
    from: [20],
    serialize: (x: number | bigint | string) => String(x),
    parse: (x: string) => Number(x),
  },
};

/**
 * PostgreSQL ended the transaction to break a deadlock (deadlock_detected): nothing of it was
 * written, and running it again is safe. Batches of sends and of cursor moves lock some of the same
 * rows (a user's cursor in a conversation), each in an order of its own.
 */
export function isDeadlock(error: unknown): boolean {
  return (error as { code?: string })?.code === "40P01";
}

export interface Database {
  readonly kind: "server" | "embedded";
  /** The pool every query goes through. */
  readonly sql: Sql;
  /**
   * Opens a client of at most one connection, for what must keep a session of its own (the
   * node's advisory lock, LISTEN) or have its statements run in the order they were sent (batches
   * of sends). Null on the embedded database, which has one connection.
   */
  dedicated(name: string): Sql | null;
  close(): Promise<void>;
}

export interface ConnectOptions {
  databaseUrl?: string;
  dataDir: string;
  /** application_name prefix, so that an operator can tell the connections of each node apart. */
  appName: string;
  log: Logger;
  /** Most pool connections; the embedded database always has one. */
  max?: number;
}

export async function connect(options: ConnectOptions): Promise<Database> {
  return options.databaseUrl
    ? connectServer(options.databaseUrl, options)
    : await connectEmbedded(options);
}

function clientOptions(appName: string, log: Logger, max: number): postgres.Options<typeof TYPES> {
  return {
    max,
    types: TYPES,
    onnotice: () => {},
    connect_timeout: 5,
    // postgres.js waits up to 20 s between reconnection attempts by default; a node must be back
    // within seconds of its database, so it retries often, never more than a second apart.
    backoff: (attempt: number) => Math.min(0.05 * 2 ** attempt, 1),
    connection: { application_name: appName.slice(0, 63) },
    debug: false,
    onclose: (id: number) => log.debug("db.connection_closed", { connection: id }),
  } as postgres.Options<typeof TYPES>;
}

function connectServer(url: string, options: ConnectOptions): Database {
  const { appName, log } = options;
  const sql = postgres(url, clientOptions(appName, log, options.max ?? 10)) as unknown as Sql;
  const extra: Sql[] = [];
  return {
    kind: "server",
    sql,
    dedicated(name) {
      const client = postgres(url, {
        ...clientOptions(`${appName}:${name}`, log, 1),
        idle_timeout: 0,
        // Never recycled: ending the lock's connection would free the node's lock, and the other
        // nodes would take the node for dead. LISTEN and the send batches gain nothing from it.
        max_lifetime: null,
      }) as unknown as Sql;
      extra.push(client);
      return client;
    },
    async close() {
      await Promise.allSettled([sql, ...extra].map((c) => c.end({ timeout: 2 })));
    },
  };
}

async function connectEmbedded(options: ConnectOptions): Promise<Database> {
  const { PGlite } = await import("@electric-sql/pglite");
  const { PGLiteSocketServer } = await import("@electric-sql/pglite-socket");
  await Deno.mkdir(options.dataDir, { recursive: true });
  const db = await PGlite.create(options.dataDir);
  const server = new PGLiteSocketServer({ db, host: "127.0.0.1", port: 0 });
  await server.start();
  const [host, port] = server.getServerConn().split(":");
  // PGlite is a single PostgreSQL backend: one connection, kept open.
  const sql = postgres({
    ...clientOptions(options.appName, options.log, 1),
    host,
    port: Number(port),
    username: "postgres",
    database: "postgres",
    idle_timeout: 0,
    max_lifetime: null,
  }) as unknown as Sql;
  options.log.info("db.embedded", { dataDir: options.dataDir });
  return {
    kind: "embedded",
    sql,
    dedicated: () => null,
    async close() {
      await sql.end({ timeout: 2 }).catch(() => {});
      await server.stop();
      await db.close();
    },
  };
}
