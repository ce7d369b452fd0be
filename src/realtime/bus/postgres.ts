/**
 * @module The PostgreSQL bus: LISTEN/NOTIFY on one channel. NOTIFY is transactional and ordered per
 * sender, and its payload must stay under 8000 bytes, so events carry ids, never message bodies.
 */
import type { Sql } from "../../db/connect.ts";
import type { Logger } from "../../log.ts";
import type { Bus, BusEvent, BusHandler, BusReceived, BusState } from "../bus.ts";

const CHANNEL = "parley";
/** NOTIFY refuses payloads of 8000 bytes or more. */
const MAX_PAYLOAD = 7900;

export class PgBus implements Bus {
  #handlers: BusHandler[] = [];
  #resync: (() => void)[] = [];
  #listens = 0;
  #unlisten?: () => Promise<void>;
  #closed = false;

  private constructor(
    private readonly sql: Sql,
    private readonly listenSql: Sql,
    private readonly log: Logger,
    private readonly nodeId: string,
    private readonly received: BusReceived,
  ) {}

  /**
   * `connected` until closed: postgres.js re-listens on its own and says so only once it has, so a
   * lost LISTEN connection shows as the database being unreachable, which healthz checks anyway.
   */
  get state(): BusState {
    return this.#closed ? "closed" : "connected";
  }

  /**
   * Starts listening. `sql` publishes; `listenSql` is a client of its own, since postgres.js keeps
   * LISTEN on a dedicated connection and re-listens after it reconnects.
   */
  static async start(
    sql: Sql,
    listenSql: Sql,
    log: Logger,
    nodeId: string,
    received: BusReceived = () => {},
  ): Promise<PgBus> {
    const bus = new PgBus(sql, listenSql, log, nodeId, received);
    const meta = await listenSql.listen(
      CHANNEL,
      (payload) => bus.#deliver(payload),
      () => bus.#listened(),
    );
    bus.#unlisten = meta.unlisten;
    return bus;
  }

  #listened() {
    // postgres.js calls this on the first LISTEN and again after every reconnect. Whatever was
    // notified in between is lost, so every call but the first asks for a catch-up.
    this.#listens += 1;
    if (this.#listens === 1) return;
    this.log.warn("bus.resync", { listens: this.#listens });
    for (const handler of this.#resync) handler();
  }

  #deliver(payload: string) {
    // New messages this node committed were delivered to its own sockets already: skip its own
    // message payloads unread, by their prefix, rather than parse them to find that out.
    if (payload.startsWith("m:")) {
      this.received("messages");
      const bar = payload.indexOf("|");
      if (payload.slice(2, bar) === this.nodeId) return;
      payload = payload.slice(bar + 1);
    } else {
      // The kind is the first event's type, read without parsing: `[{"type":"presence",...`.
      this.received(/^\[\{"type":"([a-z.]+)"/.exec(payload)?.[1] ?? "unknown");
    }
    let events: BusEvent[];
    try {
      events = JSON.parse(payload);
    } catch (error) {
      this.log.error("bus.bad_payload", { error });
      return;
    }
    for (const event of events) {
      for (const handler of this.#handlers) handler(event);
    }
  }

  async publish(...events: BusEvent[]): Promise<void> {
    // All parts in one statement, one round trip; PostgreSQL delivers them in this order.
    const payloads = events.flatMap(split);
    if (payloads.length === 0) return;
    await this.sql`select pg_notify(${CHANNEL}, p) from unnest(${payloads}::text[]) as p`;
  }

  subscribe(handler: BusHandler): void {
    this.#handlers.push(handler);
  }

  onResync(handler: () => void): void {
    this.#resync.push(handler);
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#unlisten?.().catch(() => {});
  }
}

/** One event as payloads under NOTIFY's limit: id lists too long for one are cut into several. */
const encoder = new TextEncoder();
const bytes = (text: string) => encoder.encode(text).length;

/**
 * One event as payloads under NOTIFY's limit, counted in bytes. Messages are packed whole, as many
 * to a payload as fit, each serialised once; one too large alone goes by id. Id lists too long for
 * one payload are cut in halves.
 */
export function split(event: BusEvent): string[] {
  if (event.type === "messages") return packMessages(event);
  const whole = JSON.stringify([event]);
  if (bytes(whole) + PREFIX_ROOM <= MAX_PAYLOAD) return [whole];
  if (event.type === "message.refs") {
    // Every recipient may need any of the ids, so halve whichever list is longer.
    const [a, b] = event.ids.length >= event.recipients.length
      ? [
        { ...event, ids: event.ids.slice(0, event.ids.length >> 1) },
        { ...event, ids: event.ids.slice(event.ids.length >> 1) },
      ]
      : [
        { ...event, recipients: event.recipients.slice(0, event.recipients.length >> 1) },
        { ...event, recipients: event.recipients.slice(event.recipients.length >> 1) },
      ];
    return [...split(a), ...split(b)];
  }
  if (event.type === "change") {
    // Without the message first (nodes read it by id), then to halves of the recipients.
    if (event.message !== null) return split({ ...event, message: null });
    const half = event.recipients.length >> 1;
    return [
      ...split({ ...event, recipients: event.recipients.slice(0, half) }),
      ...split({ ...event, recipients: event.recipients.slice(half) }),
    ];
  }
  if (event.type === "typing") {
    // A group of thousands: each part tells some of its members.
    const half = event.recipients.length >> 1;
    return [
      ...split({ ...event, recipients: event.recipients.slice(0, half) }),
      ...split({ ...event, recipients: event.recipients.slice(half) }),
    ];
  }
  if (event.type === "kick") {
    const half = event.sessions.length >> 1;
    return [
      ...split({ ...event, sessions: event.sessions.slice(0, half) }),
      ...split({ ...event, sessions: event.sessions.slice(half) }),
    ];
  }
  throw new Error(`Bus event "${event.type}" does not fit in one notification`);
}

/** Room kept for the `m:<origin>|` prefix of message payloads (NODE_ID is at most 64 bytes). */
const PREFIX_ROOM = 70;

function packMessages(event: Extract<BusEvent, { type: "messages" }>): string[] {
  const head = `m:${event.origin}|[{"type":"messages","origin":${
    JSON.stringify(event.origin)
  },"items":[`;
  const tail = "]}]";
  const payloads: string[] = [];
  let parts: string[] = [];
  let size = bytes(head) + tail.length;
  const flush = () => {
    if (parts.length > 0) payloads.push(head + parts.join(",") + tail);
    parts = [];
    size = bytes(head) + tail.length;
  };
  for (const item of event.items) {
    const json = JSON.stringify(item);
    const n = bytes(json) + 1;
    if (bytes(head) + tail.length + n > MAX_PAYLOAD) {
      // Up to 4000 characters of text, escaped, may not fit alone: send the id instead.
      payloads.push(...split({
        type: "message.refs",
        origin: event.origin,
        ids: [item.message.id],
        recipients: item.recipients,
      }));
      continue;
    }
    if (size + n > MAX_PAYLOAD) flush();
    parts.push(json);
    size += n;
  }
  flush();
  return payloads;
}
