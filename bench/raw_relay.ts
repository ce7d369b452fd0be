/**
 * @module The bench's baseline: a bare Hono/Deno WebSocket relay with no database and no checks. It
 * forwards `send {to: {user}, text}` as a `message` push to that user's socket and answers `sent`,
 * which is what an in-memory chat server does. Bench code only, never product code.
 *
 *   login {user, ref}           -> welcome {ref, user: {id}}   (this socket now receives for user)
 *   send {to: {user}, text, ref} -> message push to the user; sent {ref, message} to the sender
 *   anything else               -> ignored (acks included)
 */
import { Hono } from "hono";
import { upgradeWebSocket } from "hono/deno";
import type { WSContext } from "hono/ws";

const sockets = new Map<number, WSContext>();
let nextId = 1;

const app = new Hono();
app.get(
  "/ws",
  upgradeWebSocket(() => {
    let user = 0;
    return {
      onMessage(event, ws) {
        if (typeof event.data !== "string") return;
        const frame = JSON.parse(event.data);
        if (frame.type === "login") {
          user = Number(frame.user);
          sockets.set(user, ws);
          ws.send(JSON.stringify({ type: "welcome", ref: frame.ref, user: { id: user } }));
        } else if (frame.type === "send") {
          const message = {
            id: nextId++,
            from: { id: user },
            to: frame.to,
            text: frame.text,
            at: new Date().toISOString(),
            ...(frame.clientId !== undefined ? { clientId: frame.clientId } : {}),
          };
          sockets.get(frame.to?.user)?.send(JSON.stringify({ type: "message", message }));
          ws.send(JSON.stringify({ type: "sent", ref: frame.ref, message }));
        }
      },
      onClose(_event, ws) {
        if (sockets.get(user) === ws) sockets.delete(user);
      },
    };
  }),
);

Deno.serve({
  hostname: "127.0.0.1",
  port: Number(Deno.env.get("PORT") ?? "0"),
  // The same log line a Parley node writes, so the bench finds the port the same way.
  onListen: ({ port }) => console.error(JSON.stringify({ event: "http.listening", port })),
}, app.fetch);
