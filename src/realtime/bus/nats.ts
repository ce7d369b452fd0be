/**
 * @module The NATS bus (`BUS_URL=nats://...`), for clusters that outgrow LISTEN/NOTIFY: each event
 * goes only to the nodes that hold someone it is for.
 *
 * Routing. Every node subscribes to one subject, its own: `parley.node.<NODE_ID>` (a `.` in the id
 * is written `~`, since NATS splits subjects at dots). The sessions table is the presence
 * directory: to publish, a node reads in one query which nodes hold sessions of the event's
 * audience (`audienceOf`: users, group members, contacts; or nodes named directly, as for a
 * takeover's kick, whose sessions are deleted by then) and sends each such node one NATS message
 * per run of events of one type, holding only the messages that node needs. A node
 * that holds none of an event's recipients receives nothing. Nothing subscribes or unsubscribes as
 * users log in, log out, join or leave groups: the directory follows them, since it is the very
 * rows that logins, logouts and memberships write, read after the commit an event describes.
 *
 * Why no event is lost for a login: a session row is committed before the login's catch-up reads
 * what waits; a message committed before that row is in the catch-up, one committed after it finds
 * the row when its publisher reads the directory, which it does after its commit.
 *
 * Faults. The client is given every server of BUS_URL and learns the rest of the cluster from
 * them; it reconnects for ever, to whichever server answers. Events can be lost three ways, and
 * each ends in the same resync as a LISTEN reconnect (`onResync`, a catch-up from the tables):
 * - this node was cut off: on reconnecting it resyncs, and again `SETTLE_MS` later, because its
 *   subscription reaches the other servers of the cluster a moment after its own server has it;
 * - a publisher was cut off (what it published since the connection died, unnoticed, and until it
 *   is back, is lost): on reconnecting it sends a resync request to each node it published to
 *   within `LOSS_WINDOW_MS` before the cut, and each resyncs;
 * - every server down: all of the above, for every node. Meanwhile sends still commit and
 *   publishing drops events rather than buffering them without bound.
 * A payload that does not decode is logged and dropped; a handler that throws is logged.
 */
import { connect, type Msg, type NatsConnection, type Status } from "@nats-io/transport-node";
import type { Querier } from "../../db/connect.ts";
import { type DirectoryRow, nodesFor } from "../../db/queries/directory.ts";
import type { Logger } from "../../log.ts";
import {
  type Audience,
  audienceOf,
  type Bus,
  type BusEvent,
  type BusHandler,
  type BusReceived,
  type BusState,
  deliveryAudience,
} from "../bus.ts";

/** The subject a node listens on. */
export const nodeSubject = (nodeId: string) => `parley.node.${nodeId.replaceAll(".", "~")}`;

/** Largest payload built; the server's default limit is 1 MiB. */
const CHUNK_BYTES = 256 * 1024;
/** Time for a subscription to reach the other servers of the cluster after a reconnect. */
const SETTLE_MS = 1000;
/** How often the client pings its server, and how many unanswered pings mean it is gone. */
const PING_MS = 2000;
const MAX_PINGS_OUT = 2;
/** How long a dead connection can go unnoticed, plus a margin: publishes in it may be lost. */
const LOSS_WINDOW_MS = PING_MS * (MAX_PINGS_OUT + 1) + 2000;
/** A resync request, sent to the nodes a publisher may have lost events for. */
const RESYNC_REQUEST = '{"resync":true}';

export interface NatsBusOptions {
  /** `nats://host:port` of one or more servers of the cluster. */
  servers: readonly string[];
  /** Reads the directory (the sessions table). */
  sql: Querier;
  log: Logger;
  nodeId: string;
  received?: BusReceived;
  /** How long `start` waits for a first connection before the node serves without one. */
  connectWaitMs?: number;
}

export class NatsBus implements Bus {
  readonly #o: Required<NatsBusOptions>;
  readonly #subject: string;
  #nc: NatsConnection | null = null;
  #state: BusState = "connecting";
  /** Set once `start` has returned: from then on a late first connection may have missed events. */
  #serving = false;
  #handlers: BusHandler[] = [];
  #resync: (() => void)[] = [];
  /** When this node last published to each node, for resync requests after a cut. */
  #targets = new Map<string, number>();
  #cutAt = 0;
  #timers = new Set<ReturnType<typeof setTimeout>>();
  #encoder = new TextEncoder();

  private constructor(options: NatsBusOptions) {
    this.#o = { received: () => {}, connectWaitMs: 5000, ...options };
    this.#subject = nodeSubject(options.nodeId);
  }

  /**
   * Connects, waiting at most `connectWaitMs`: with no server reachable the node still starts and
   * serves (sends commit, logins catch up) and the bus joins when a server answers.
   */
  static async start(options: NatsBusOptions): Promise<NatsBus> {
    const bus = new NatsBus(options);
    const connecting = connect({
      servers: [...options.servers],
      name: `parley:${options.nodeId}`,
      maxReconnectAttempts: -1,
      waitOnFirstConnect: true,
      reconnectTimeWait: 500,
      reconnectJitter: 250,
      pingInterval: PING_MS,
      maxPingOut: MAX_PINGS_OUT,
    }).then(
      (nc) => bus.#connected(nc),
      (error) => options.log.error("bus.connect_failed", { error: String(error) }),
    );
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      connecting,
      new Promise((resolve) => timer = setTimeout(resolve, bus.#o.connectWaitMs)),
    ]);
    clearTimeout(timer);
    if (bus.#state === "connecting") {
      options.log.warn("bus.connecting", { servers: options.servers, state: bus.#state });
    }
    bus.#serving = true;
    return bus;
  }

  get state(): BusState {
    return this.#state;
  }

  #connected(nc: NatsConnection): void {
    if (this.#state === "closed") {
      nc.close().catch(() => {});
      return;
    }
    this.#nc = nc;
    nc.subscribe(this.#subject, { callback: (error, msg) => this.#receive(error, msg) });
    this.#state = "connected";
    this.#o.log.info("bus.connected", { server: nc.getServer(), subject: this.#subject });
    (async () => {
      for await (const status of nc.status()) this.#status(status);
    })().catch((error) => this.#o.log.warn("bus.status_failed", { error: String(error) }));
    // Connected only after the node began serving: what it published meanwhile was dropped.
    if (this.#serving) this.#afterCut("first connect");
  }

  #status(status: Status): void {
    switch (status.type) {
      case "disconnect":
        if (this.#state !== "connected") return;
        this.#state = "disconnected";
        this.#cutAt = Date.now();
        this.#o.log.warn("bus.disconnected", { server: status.server, state: this.#state });
        return;
      case "reconnect":
        if (this.#state === "closed") return;
        this.#state = "connected";
        this.#o.log.warn("bus.reconnected", { server: status.server, state: this.#state });
        this.#afterCut("reconnect");
        return;
      case "error":
        this.#o.log.warn("bus.error", { error: String(status.error) });
        return;
      case "ldm":
        this.#o.log.info("bus.server_leaving", { server: status.server });
        return;
    }
  }

  /** Back after a cut: ask the nodes we may have lost events for to resync, and resync ourselves. */
  #afterCut(reason: string): void {
    const nc = this.#nc;
    if (!nc) return;
    nc.flush().catch(() => {}).then(() => {
      if (this.#state !== "connected") return;
      const since = (this.#cutAt || Date.now()) - LOSS_WINDOW_MS;
      for (const [node, at] of this.#targets) {
        if (at < since) this.#targets.delete(node);
        else if (node !== this.#o.nodeId) this.#send(nodeSubject(node), RESYNC_REQUEST);
      }
      this.#fireResync(reason);
      this.#later(SETTLE_MS, () => this.#fireResync(`${reason}, settled`));
    });
  }

  #later(ms: number, work: () => void): void {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      if (this.#state !== "closed") work();
    }, ms);
    this.#timers.add(timer);
  }

  #fireResync(reason: string): void {
    this.#o.log.warn("bus.resync", { reason });
    for (const handler of this.#resync) {
      try {
        handler();
      } catch (error) {
        this.#o.log.error("bus.handler_failed", { error });
      }
    }
  }

  #receive(error: Error | null, msg: Msg): void {
    if (error) {
      this.#o.log.warn("bus.subscription_error", { error: String(error) });
      return;
    }
    let data: unknown;
    try {
      data = JSON.parse(msg.string());
    } catch {
      data = undefined;
    }
    if (!Array.isArray(data)) {
      if (isResyncRequest(data)) {
        this.#o.received("resync");
        this.#fireResync("a publisher reconnected");
        return;
      }
      return this.#drop(msg, "not JSON, or not a list of events");
    }
    if (!data.every((e) => typeof e === "object" && e !== null && typeof e.type === "string")) {
      return this.#drop(msg, "an event without a type");
    }
    if (data.length === 0) return;
    this.#o.received(data[0].type);
    for (const event of data as BusEvent[]) {
      for (const handler of this.#handlers) {
        try {
          handler(event);
        } catch (error) {
          this.#o.log.error("bus.handler_failed", { type: event.type, error });
        }
      }
    }
  }

  #drop(msg: Msg, why: string): void {
    this.#o.received("invalid");
    this.#o.log.warn("bus.bad_payload", {
      subject: msg.subject,
      bytes: msg.data.length,
      why,
      start: msg.string().slice(0, 80),
    });
  }

  async publish(...events: BusEvent[]): Promise<void> {
    if (this.#state === "closed" || events.length === 0) return;
    // Each event, or each message of a `messages` event, with its audience.
    const parts = events.flatMap((event): { event: BusEvent; audience: Audience }[] =>
      event.type === "messages"
        ? event.items.map((item) => ({
          event: { ...event, items: [item] },
          audience: deliveryAudience(item),
        }))
        : [{ event, audience: audienceOf(event) }]
    );
    const keys = { users: [] as number[], groups: [] as number[], contactsOf: [] as number[] };
    for (const { audience } of parts) {
      for (const k of ["users", "groups", "contactsOf"] as const) {
        if (audience[k]) keys[k].push(...audience[k]);
      }
    }
    const directory = new Map<string, string[]>();
    const rows = Object.values(keys).some((list) => list.length > 0)
      ? await nodesFor(this.#o.sql, keys)
      : [];
    for (const row of rows) {
      const key = `${row.kind}:${row.key}`;
      const nodes = directory.get(key);
      if (nodes) nodes.push(row.node);
      else directory.set(key, [row.node]);
    }
    // Per node, its events in publish order.
    const perNode = new Map<string, BusEvent[]>();
    for (const { event, audience } of parts) {
      for (const node of nodesOf(audience, directory)) {
        // A node delivers the messages it committed itself.
        if (event.type === "messages" && node === this.#o.nodeId) continue;
        const list = perNode.get(node);
        if (list) list.push(event);
        else perNode.set(node, [event]);
      }
    }
    const now = Date.now();
    for (const [node, list] of perNode) {
      this.#targets.set(node, now);
      if (this.#state !== "connected") continue;
      for (const payload of encode(list, this.#encoder)) this.#send(nodeSubject(node), payload);
    }
  }

  #send(subject: string, payload: string): void {
    try {
      this.#nc?.publish(subject, payload);
    } catch (error) {
      this.#o.log.warn("bus.publish_failed", { subject, error: String(error) });
    }
  }

  subscribe(handler: BusHandler): void {
    this.#handlers.push(handler);
  }

  onResync(handler: () => void): void {
    this.#resync.push(handler);
  }

  async close(): Promise<void> {
    const wasConnected = this.#state === "connected";
    this.#state = "closed";
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    const nc = this.#nc;
    this.#nc = null;
    if (!nc) return;
    // Flushing waits for a server: only worth it while one is there.
    if (wasConnected) await nc.flush().catch(() => {});
    await nc.close().catch(() => {});
  }
}

function isResyncRequest(data: unknown): boolean {
  return typeof data === "object" && data !== null &&
    (data as { resync?: unknown }).resync === true;
}

function nodesOf(audience: Audience, directory: Map<string, string[]>): Set<string> {
  const out = new Set<string>();
  const add = (kind: DirectoryRow["kind"], ids: readonly number[] | undefined) => {
    for (const id of ids ?? []) {
      for (const node of directory.get(`${kind}:${id}`) ?? []) out.add(node);
    }
  };
  add("u", audience.users);
  add("g", audience.groups);
  add("c", audience.contactsOf);
  for (const node of audience.nodes ?? []) out.add(node);
  return out;
}

/**
 * One node's events as payloads: each a JSON list of consecutive events of one type (the kind the
 * receiver counts it under), under `CHUNK_BYTES`. The one-message `messages` events that `publish`
 * split up are joined back per origin.
 */
export function encode(events: BusEvent[], encoder = new TextEncoder()): string[] {
  const merged: BusEvent[] = [];
  for (const event of events) {
    const last = merged.at(-1);
    if (event.type === "messages" && last?.type === "messages" && last.origin === event.origin) {
      merged[merged.length - 1] = { ...last, items: [...last.items, ...event.items] };
    } else merged.push(event);
  }
  const payloads: string[] = [];
  let run: string[] = [];
  let runType = "";
  let size = 2;
  const flush = () => {
    if (run.length > 0) payloads.push(`[${run.join(",")}]`);
    run = [];
    size = 2;
  };
  const add = (type: string, json: string) => {
    const n = encoder.encode(json).length + 1;
    if (type !== runType || size + n > CHUNK_BYTES) flush();
    runType = type;
    run.push(json);
    size += n;
  };
  for (const event of merged) {
    if (event.type !== "messages") {
      add(event.type, JSON.stringify(event));
      continue;
    }
    // Cut a long list of messages into events of their own, so that no payload grows too large.
    let items: string[] = [];
    let bytes = 0;
    const head = `{"type":"messages","origin":${JSON.stringify(event.origin)},"items":[`;
    const cut = () => {
      if (items.length > 0) add("messages", `${head}${items.join(",")}]}`);
      items = [];
      bytes = 0;
    };
    for (const item of event.items) {
      const json = JSON.stringify(item);
      const n = encoder.encode(json).length + 1;
      if (bytes + n > CHUNK_BYTES / 2) cut();
      items.push(json);
      bytes += n;
    }
    cut();
  }
  flush();
  return payloads;
}
