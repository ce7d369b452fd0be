/**
 * @module A protocol fuzzer: fast-check generates hostile frames of many shapes, and `fuzz` sends
 * them to a live server, checking each answer against PROTOCOL.md. Shared by the test (10,000
 * frames) and `deno task fuzz` (as many as asked).
 */
import fc from "fast-check";
import { Client, type Frame } from "./client.ts";

const REQUEST_TYPES = [
  "register",
  "login",
  "ping",
  "send",
  "ack",
  "friend.add",
  "group.create",
  "group.join",
  "history",
  "logout",
];

const nasty = fc.constantFrom(
  "'; drop table users; --",
  "1 OR 1=1",
  "<script>alert(1)</script>",
  "<img src=x onerror=alert(1)>",
  "\u0000",
  "nul\u0000inside",
  "\ud800",
  "lone \udfff low",
  "🎉".repeat(100),
  "\\",
  "%s%s%n",
  "${jndi:ldap://x}",
  "",
  " ",
  "x".repeat(5000),
);

const number = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.constantFrom(
    0,
    -1,
    -0,
    1e308,
    -1e308,
    2 ** 53,
    2 ** 53 + 2,
    2 ** 63,
    Number.MAX_SAFE_INTEGER,
    1.5,
  ),
);

/** A value of any JSON type, biased to the hostile ones. */
const anyValue: fc.Arbitrary<unknown> = fc.oneof(
  nasty,
  number,
  fc.boolean(),
  fc.constant(null),
  fc.string(),
  fc.array(fc.oneof(number, nasty), { maxLength: 5 }),
  fc.dictionary(fc.string({ maxLength: 8 }), fc.oneof(number, nasty), { maxKeys: 4 }),
);

const ref = fc.oneof(
  fc.string({ maxLength: 64 }),
  fc.integer(),
  fc.constant(undefined),
  // Invalid refs: the reply must then carry none.
  fc.string({ minLength: 65, maxLength: 80 }),
  fc.double({ noInteger: true }),
  fc.constant(null),
  fc.array(fc.integer(), { maxLength: 2 }),
);

/**
 * Requests of every type with their fields wrong. Requests that would write (register, send,
 * friend.add, group.*) get a field that always fails validation, so that no generated frame may
 * change the database; read-only requests may come out valid.
 */
const wrongRequest = fc.record({
  type: fc.oneof(fc.constantFrom(...REQUEST_TYPES), fc.string({ maxLength: 20 }), number),
  ref,
  name: anyValue,
  password: anyValue,
  token: anyValue,
  to: fc.oneof(anyValue, fc.record({ user: anyValue }), fc.record({ group: anyValue })),
  text: anyValue,
  clientId: anyValue,
  ids: anyValue,
  user: anyValue,
  group: anyValue,
  description: anyValue,
  with: anyValue,
  before: anyValue,
  limit: anyValue,
}, { requiredKeys: ["type"] }).map((frame) => {
  const writes = ["register", "send", "friend.add", "group.create", "group.join"];
  if (typeof frame.type === "string" && writes.includes(frame.type)) {
    // Always invalid: a name and a group name of 100 characters, a text of 5000.
    Object.assign(frame, frame.type === "register" ? { name: "x".repeat(100) } : {});
    Object.assign(frame, frame.type === "send" ? { text: "x".repeat(5000) } : {});
    Object.assign(frame, frame.type === "friend.add" ? { user: -1 } : {});
    Object.assign(frame, frame.type === "group.create" ? { name: "x".repeat(100) } : {});
    Object.assign(frame, frame.type === "group.join" ? { group: 0 } : {});
  }
  if (frame.type === "logout") frame.type = "logout!"; // a valid logout would end the run's socket
  if (frame.type === "login") frame.token = 12345; // never a valid login
  return JSON.stringify(frame);
});

/** Valid JSON nested `n` levels deep: `open` n times, then `inner`, then `close` n times. */
const deep = (n: number, open: string, close: string, inner = "") =>
  open.repeat(n) + inner + close.repeat(n);

const rawText = fc.oneof(
  // Truncated JSON.
  fc.tuple(wrongRequest, fc.nat()).map(([json, cut]) =>
    json.slice(0, cut % Math.max(1, json.length))
  ),
  // Not JSON at all.
  fc.string({ maxLength: 200 }),
  fc.constantFrom("", "{", "}", "[]", "null", "1", '"type"', "true", "{}", '{"type":}', "\u0000"),
  // JSON that is not an object.
  anyValue.map((v) => JSON.stringify(v) ?? "null"),
  // Deep nesting, 10,000 levels.
  fc.constantFrom(
    deep(10_000, "[", "]"),
    deep(10_000, '{"a":', "}", "1"),
    `{"type":"ping","x":${deep(10_000, "[", "]")}}`,
  ),
  // Prototype keys.
  fc.constantFrom(
    '{"type":"ping","__proto__":{"admin":true},"ref":"proto"}',
    '{"__proto__":{"type":"ping"}}',
    '{"type":"send","constructor":{"prototype":{"x":1}},"to":{"user":1,"__proto__":{"group":1}},"text":""}',
    '{"type":"history","with":{"__proto__":{"user":1}},"ref":7}',
    '{"type":"constructor","ref":"c"}',
    '{"type":"__proto__","ref":"p"}',
    '{"type":"toString","ref":"t"}',
    '{"type":"hasOwnProperty","ref":"h"}',
  ),
  // Lone surrogates and NULs through JSON escapes.
  fc.constantFrom(
    '{"type":"register","name":"\\ud800","password":"\\u0000\\u0000\\u0000\\u0000","ref":"s"}',
    '{"type":"ping","ref":"\\udfff"}',
    '{"type":"send","to":{"user":1},"text":"\\ud800","ref":"lone"}',
  ),
  wrongRequest,
);

/** `count` hostile frames, the same ones for the same seed. */
export function hostileFrames(count: number, seed: number): string[] {
  return fc.sample(rawText, { numRuns: count, seed });
}

/** The ref a reply to `text` must carry: the frame's own when it is a valid ref, else none. */
export function expectedRef(text: string): string | number | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  if (!Object.hasOwn(value, "ref")) return undefined;
  const r = (value as { ref: unknown }).ref;
  if (typeof r === "string" && r.length <= 64) return r;
  if (typeof r === "number" && Number.isSafeInteger(r)) return r;
  return undefined;
}

const ALLOWED_ERRORS = new Set([
  "bad_json",
  "bad_frame",
  "unauthenticated",
  "bad_credentials",
  "not_found",
  "forbidden",
]);

export interface FuzzResult {
  frames: number;
  sockets: number;
  failures: string[];
}

/**
 * Sends `frames` to `wsUrl`, each followed by a ping whose pong marks the end of its answers (the
 * server answers a socket's requests in order), and checks every answer. A socket is replaced after
 * `perSocket` frames, under the 50-bad-frames rule; `login` logs each new socket in first.
 */
export async function fuzz(
  wsUrl: string,
  frames: string[],
  login?: () => Frame,
  perSocket = 45,
): Promise<FuzzResult> {
  const failures: string[] = [];
  let sockets = 0;
  let marker = 0;
  for (let start = 0; start < frames.length; start += perSocket) {
    const c = await Client.connect(wsUrl);
    sockets++;
    if (login) {
      const w = await c.request(login());
      if (w.type !== "welcome") failures.push(`fuzz login failed: ${JSON.stringify(w)}`);
    }
    const base = c.frames.length;
    const batch = frames.slice(start, start + perSocket).map((text) => ({
      text,
      end: `fuzz-end-${marker++}`,
    }));
    for (const { text, end } of batch) {
      c.send(text);
      c.send({ type: "ping", ref: end });
    }
    try {
      const last = batch[batch.length - 1].end;
      await c.next((f) => f.ref === last, 10_000);
    } catch {
      failures.push(
        `no answer to the batch (socket ${
          c.raw.readyState === WebSocket.OPEN ? "open" : "closed"
        })`,
      );
    }
    let cursor = base;
    for (const { text, end } of batch) {
      const stop = c.frames.findIndex((f, i) => i >= cursor && f.ref === end);
      if (stop < 0) {
        failures.push(`no pong after ${text.slice(0, 200)}`);
        break;
      }
      const answers = c.frames.slice(cursor, stop).filter((f) =>
        f.type !== "message" && f.type !== "presence"
      );
      cursor = stop + 1;
      const ref = expectedRef(text);
      for (const a of answers) {
        if (a.type === "error" && !ALLOWED_ERRORS.has(a.code as string)) {
          failures.push(`error ${a.code} for ${text.slice(0, 200)}`);
        }
        if (a.ref !== ref) {
          failures.push(
            `ref ${JSON.stringify(a.ref)} instead of ${JSON.stringify(ref)} for ${
              text.slice(0, 200)
            }`,
          );
        }
      }
      if (answers.length !== 1 && !(answers.length === 0 && /"ack"/.test(text))) {
        failures.push(`${answers.length} answers to ${text.slice(0, 200)}`);
      }
    }
    await c.close();
  }
  return { frames: frames.length, sockets, failures };
}
