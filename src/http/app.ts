/**
 * @module The Hono app: the HTTP API, health, and the WebSocket upgrade. Routes decode, call the
 * domain and encode; error codes become statuses only here.
 */
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { secureHeaders } from "hono/secure-headers";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { Chat } from "../chat/chat.ts";
import { ChatError, type ErrorCode, toChatError } from "../chat/errors.ts";
import type { Logger } from "../log.ts";
import type { Metrics } from "../metrics.ts";
import type { ChatSocket, SocketLike } from "../realtime/socket.ts";
import { staticRoutes } from "./static.ts";
import { clientAddress, websocketHandler } from "./ws_deno.ts";

const STATUS: Partial<Record<ErrorCode, ContentfulStatusCode>> = {
  bad_json: 400,
  bad_frame: 400,
  bad_credentials: 401,
  forbidden: 403,
  not_found: 404,
  name_taken: 409,
  rate_limited: 429,
  unavailable: 503,
};

export interface AppOptions {
  chat: Chat;
  nodeId: string;
  log: Logger;
  /** Browser origins allowed besides the server's own. */
  allowedOrigins: readonly string[];
  maxConnections: number;
  idleTimeoutMs: number;
  /** Open sockets on this node. */
  connections: () => number;
  health: () => Promise<{ ok: boolean; draining: boolean; reason?: string; bus?: string }>;
  /** Cheap, for every upgrade: no database round trip. */
  draining: () => boolean;
  createSocket: (socket: SocketLike, remote: string) => ChatSocket;
  metrics: Metrics;
}

export function createApp(o: AppOptions): Hono {
  const app = new Hono();

  // Access log: one line per request, at debug for the health and metrics probes.
  app.use(async (c, next) => {
    const started = performance.now();
    await next();
    const status = c.res.status;
    o.metrics.httpRequests.inc({ method: c.req.method, status: String(status) });
    const probe = c.req.path === "/healthz" || c.req.path === "/metrics";
    const line = {
      method: c.req.method,
      path: c.req.path,
      status,
      ms: Math.round((performance.now() - started) * 10) / 10,
      remote: clientAddress(c),
    };
    if (probe) o.log.debug("http.access", line);
    else o.log.info("http.access", line);
  });

  app.use(secureHeaders({
    contentSecurityPolicy: {
      defaultSrc: ["'self'"],
      connectSrc: ["'self'", "ws:", "wss:"],
      imgSrc: ["'self'", "data:"],
      objectSrc: ["'none'"],
      frameAncestors: ["'none'"],
    },
  }));

  app.onError((error, c) => {
    const chatError = toChatError(error);
    if (chatError.code === "internal") o.log.error("http.internal", { error, path: c.req.path });
    // HTTP has no frames: a malformed body is a bad request.
    const code = chatError.code === "bad_frame" || chatError.code === "bad_json"
      ? "bad_request"
      : chatError.code;
    const retry = chatError.retryAfterMs;
    return c.json(
      {
        error: code,
        message: chatError.message,
        ...(retry !== undefined ? { retryAfterMs: retry } : {}),
      },
      STATUS[chatError.code] ?? 500,
    );
  });

  app.get("/healthz", async (c) => {
    const h = await o.health();
    return c.json(
      {
        status: h.ok ? "ok" : "unavailable",
        node: o.nodeId,
        draining: h.draining,
        ...(h.bus ? { bus: h.bus } : {}),
        ...(h.reason ? { reason: h.reason } : {}),
      },
      h.ok ? 200 : 503,
    );
  });

  app.get("/metrics", async (c) => {
    return c.body(await o.metrics.text(), 200, { "content-type": o.metrics.contentType });
  });

  app.route("/api", accountRoutes(o.chat));

  app.get(
    "/ws",
    async (c, next) => {
      if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
        return c.json({ error: "bad_request", message: "Open /ws as a WebSocket" }, 426);
      }
      if (o.draining()) {
        return c.json(
          { error: "unavailable", message: "This node is shutting down: use another" },
          503,
        );
      }
      if (o.connections() >= o.maxConnections) {
        return c.json({
          error: "unavailable",
          message: "This node is full: try another or retry later",
        }, 503);
      }
      const origin = c.req.header("origin");
      if (origin && !originAllowed(origin, c.req.header("host"), o.allowedOrigins)) {
        o.log.warn("ws.origin_refused", { origin });
        return c.json({ error: "forbidden", message: `Origin "${origin}" may not open /ws` }, 403);
      }
      await next();
    },
    websocketHandler(o.createSocket, o.idleTimeoutMs),
  );

  app.route("/", staticRoutes());

  return app;
}

/** A browser may connect from the server's own origin or one configured in ALLOWED_ORIGINS. */
export function originAllowed(
  origin: string,
  host: string | undefined,
  allowed: readonly string[],
) {
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    return false;
  }
  return allowed.includes(url.origin) || (host !== undefined && url.host === host);
}

function accountRoutes(chat: Chat): Hono {
  const api = new Hono();
  api.use(bodyLimit({
    maxSize: 4096,
    onError: (c) =>
      c.json({ error: "bad_request", message: "The request body is over 4096 bytes" }, 413),
  }));

  const body = async (c: { req: { json(): Promise<unknown> } }) => {
    try {
      const value = await c.req.json();
      if (typeof value === "object" && value !== null && !Array.isArray(value)) {
        return value as Record<string, unknown>;
      }
    } catch {
      // Answered below.
    }
    throw new ChatError("bad_frame", 'The body is not a JSON object: send {"name", "password"}');
  };

  api.post("/register", async (c) => {
    const { name, password } = await body(c);
    const user = await chat.register(name, password, clientAddress(c));
    return c.json({ user }, 201);
  });

  api.post("/login", async (c) => {
    const { name, password } = await body(c).catch(() => ({
      name: undefined,
      password: undefined,
    }));
    const user = await chat.authenticate(
      {
        name: typeof name === "string" ? name : "",
        password: typeof password === "string" ? password : "",
      },
      clientAddress(c),
    );
    const token = await chat.accounts.issueToken(user.id);
    return c.json({ token, user }, 200);
  });

  return api;
}
