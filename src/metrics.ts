/**
 * @module Prometheus metrics for one node (prom-client). Built once by the composition root and
 * handed to the parts that count; gauges that mirror state are read when scraped.
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";

/** Latency buckets in seconds, from a fast local commit to a slow cross-node push. */
const LATENCY = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export interface Gauges {
  sockets(): number;
  sessions(): number;
  draining(): boolean;
  heartbeatAgeSeconds(): number;
  /** Messages waiting for acknowledgement in the whole database; null when it cannot be read. */
  waiting(): Promise<number | null>;
}

export class Metrics {
  readonly registry = new Registry();
  readonly logins: Counter<"result">;
  readonly messagesSent: Counter;
  readonly messagesDelivered: Counter;
  readonly sendCommitSeconds: Histogram;
  readonly sendPushSeconds: Histogram;
  readonly busEvents: Counter<"type">;
  readonly busResyncs: Counter;
  readonly busMessagesReceived: Counter<"kind">;
  readonly dbErrors: Counter;
  readonly badFrames: Counter<"code">;
  readonly httpRequests: Counter<"method" | "status">;
  readonly presenceHeld: Gauge;
  readonly presencePushed: Counter<"online">;

  constructor(gauges: Gauges) {
    const registers = [this.registry];
    this.logins = new Counter({
      name: "parley_logins_total",
      help: "Logins by result: ok, or the error code that refused them",
      labelNames: ["result"],
      registers,
    });
    this.messagesSent = new Counter({
      name: "parley_messages_sent_total",
      help: "Messages committed and confirmed to their sender on this node",
      registers,
    });
    this.messagesDelivered = new Counter({
      name: "parley_messages_delivered_total",
      help: "Message pushes written to sockets on this node",
      registers,
    });
    this.sendCommitSeconds = new Histogram({
      name: "parley_send_commit_seconds",
      help: "From a send request's arrival to its commit",
      buckets: LATENCY,
      registers,
    });
    this.sendPushSeconds = new Histogram({
      name: "parley_send_push_seconds",
      help: "From a message's commit timestamp to its push on this node (database clock)",
      buckets: LATENCY,
      registers,
    });
    this.busEvents = new Counter({
      name: "parley_bus_events_total",
      help: "Bus events received, by type",
      labelNames: ["type"],
      registers,
    });
    this.busMessagesReceived = new Counter({
      name: "parley_bus_messages_received_total",
      help:
        "Messages this node took in from the bus, by kind (their events' type; invalid for ones that did not decode)",
      labelNames: ["kind"],
      registers,
    });
    this.busResyncs = new Counter({
      name: "parley_bus_resyncs_total",
      help: "Catch-ups from the tables after the bus reconnected",
      registers,
    });
    this.dbErrors = new Counter({
      name: "parley_db_errors_total",
      help: "Requests that failed because the database could not be reached",
      registers,
    });
    this.badFrames = new Counter({
      name: "parley_bad_frames_total",
      help: "Frames refused as bad_json or bad_frame",
      labelNames: ["code"],
      registers,
    });
    this.httpRequests = new Counter({
      name: "parley_http_requests_total",
      help: "HTTP requests by method and status",
      labelNames: ["method", "status"],
      registers,
    });
    this.presenceHeld = new Gauge({
      name: "parley_presence_offline_held",
      help:
        "Offline presence changes held back for PRESENCE_GRACE_MS, cancelled if the user returns",
      registers,
    });
    this.presencePushed = new Counter({
      name: "parley_presence_pushed_total",
      help: "Presence changes pushed to this node's contacts of the user, by online",
      labelNames: ["online"],
      registers,
    });
    new Gauge({
      name: "parley_sockets_open",
      help: "WebSocket and TCP connections open on this node",
      registers,
      collect() {
        this.set(gauges.sockets());
      },
    });
    new Gauge({
      name: "parley_sessions",
      help: "Logged-in sessions on this node",
      registers,
      collect() {
        this.set(gauges.sessions());
      },
    });
    new Gauge({
      name: "parley_draining",
      help: "1 while this node drains",
      registers,
      collect() {
        this.set(gauges.draining() ? 1 : 0);
      },
    });
    new Gauge({
      name: "parley_heartbeat_age_seconds",
      help: "Time since this node last renewed its lease",
      registers,
      collect() {
        this.set(gauges.heartbeatAgeSeconds());
      },
    });
    new Gauge({
      name: "parley_memory_bytes",
      help: "This process's memory: rss, heap_total, heap_used, external",
      labelNames: ["kind"],
      registers,
      collect() {
        const m = Deno.memoryUsage();
        this.set({ kind: "rss" }, m.rss);
        this.set({ kind: "heap_total" }, m.heapTotal);
        this.set({ kind: "heap_used" }, m.heapUsed);
        this.set({ kind: "external" }, m.external);
      },
    });
    new Gauge({
      name: "parley_waiting_messages",
      help: "Messages waiting for acknowledgement, all nodes (-1 when unreadable)",
      registers,
      async collect() {
        this.set((await gauges.waiting()) ?? -1);
      },
    });
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
