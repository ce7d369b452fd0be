/**
 * @module The wire protocol's requests (PROTOCOL.md) as zod schemas, and the decoder that turns a
 * text frame into a typed request or an error that names what is wrong.
 */
import { z } from "zod";
import { ChatError } from "../chat/errors.ts";
import { id, storableText } from "../chat/rules.ts";

export const ref = z.union([
  z.string().max(64, "expected at most 64 characters"),
  z.number().int("expected an integer").min(Number.MIN_SAFE_INTEGER).max(Number.MAX_SAFE_INTEGER),
], { error: "expected a string of at most 64 characters or an integer" });
export type Ref = z.infer<typeof ref>;

const target = z.union([
  z.strictObject({ user: id }),
  z.strictObject({ group: id }),
], { error: 'expected {"user": id} or {"group": id}' });
export type Target = z.infer<typeof target>;

const anyText = z.string({ error: "expected a string" }).max(
  1024,
  "expected at most 1024 characters",
);

/** Login takes a name and password, or a token. Shapes are checked here, values by the domain. */
const login = z.object({
  name: anyText.optional(),
  password: anyText.optional(),
  token: z.string({ error: "expected a string" }).max(256, "expected at most 256 characters")
    .optional(),
}).superRefine((v, ctx) => {
  if (v.token !== undefined) return;
  if (v.name === undefined) {
    ctx.addIssue({ code: "custom", path: ["name"], message: "required, or give a token" });
  } else if (v.password === undefined) {
    ctx.addIssue({ code: "custom", path: ["password"], message: "required" });
  }
});

/** A position in a conversation's log: 0 (before the first event) or more. */
const seq = z.number({ error: "expected a whole number" }).int("expected a whole number")
  .min(0, "expected a whole number").max(Number.MAX_SAFE_INTEGER, "expected a smaller number");

/** `ack {ids}` (version 1) or `ack {with, seq}` (version 2). */
const ack = z.object({
  ids: z.array(id, { error: "expected an array of ids" }).max(1000, "expected at most 1000 ids")
    .optional(),
  with: target.optional(),
  seq: seq.optional(),
}).superRefine((v, ctx) => {
  if (v.ids !== undefined && v.with === undefined && v.seq === undefined) return;
  if (v.ids !== undefined) {
    ctx.addIssue({
      code: "custom",
      path: ["ids"],
      message: 'give either "ids" or "with" and "seq"',
    });
  } else if (v.with === undefined) {
    ctx.addIssue({ code: "custom", path: ["with"], message: 'required, or give "ids"' });
  } else if (v.seq === undefined) {
    ctx.addIssue({ code: "custom", path: ["seq"], message: "required" });
  }
});

/**
 * A string field. Values users choose (names, passwords, text) are checked once, by the domain,
 * which every transport goes through; here only their type.
 */
const text = z.string({ error: "expected a string" });

export const REQUESTS = {
  "register": z.object({ name: text, password: text }),
  "login": login,
  "ping": z.object({}),
  "send": z.object({
    to: target,
    text,
    clientId: z.string({ error: "expected a string" }).min(1, "expected 1 to 64 characters")
      .max(64, "expected 1 to 64 characters").pipe(storableText).optional(),
  }),
  "ack": ack,
  "read": z.object({ with: target, seq }),
  "receipts": z.object({ group: id }),
  "friend.add": z.object({ user: id }),
  "group.create": z.object({ name: text, description: text.optional() }),
  "group.join": z.object({ group: id }),
  "history": z.object({
    with: target,
    before: id.optional(),
    after: id.optional(),
    limit: z.number({ error: "expected an integer from 1 to 100" }).int(
      "expected an integer from 1 to 100",
    )
      .min(1, "expected an integer from 1 to 100").max(100, "expected an integer from 1 to 100")
      .optional(),
  }),
  "logout": z.object({}),
  // v2: people and typing.
  "user.search": z.object({ query: text }),
  "friend.remove": z.object({ user: id }),
  "user.block": z.object({ user: id }),
  "user.unblock": z.object({ user: id }),
  "group.leave": z.object({ group: id }),
  "typing": z.object({ to: target }),
  // v2: edits and deletions.
  "message.edit": z.object({ id, text }),
  "message.delete": z.object({ id }),
} as const;

export type RequestType = keyof typeof REQUESTS;
export type Request = {
  [K in RequestType]: { type: K } & z.output<typeof REQUESTS[K]>;
}[RequestType];

/** A frame that could not be decoded, with the `ref` to answer under when one was readable. */
export class FrameError extends ChatError {
  constructor(code: "bad_json" | "bad_frame", message: string, readonly ref?: Ref) {
    super(code, message);
  }
}

function fieldPath(path: readonly PropertyKey[]): string {
  return path.map(String).join(".");
}

/**
 * Decodes one text frame. Throws `FrameError`; its `ref` is the frame's own when that was valid,
 * so that even a rejected request is answered under its ref.
 */
export function decodeFrame(text: string): { ref?: Ref; request: Request } {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new FrameError("bad_json", "The frame is not valid JSON: send one JSON object per frame");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new FrameError("bad_frame", 'The frame is not a JSON object: send {"type": ...}');
  }
  const frame = value as Record<string, unknown>;
  const fast = fastSend(frame);
  if (fast) return fast;
  let validRef: Ref | undefined;
  if (Object.hasOwn(frame, "ref")) {
    const r = ref.safeParse(frame.ref);
    if (!r.success) {
      throw new FrameError("bad_frame", `Invalid field "ref": ${r.error.issues[0].message}`);
    }
    validRef = r.data;
  }
  const type = frame.type;
  if (typeof type !== "string") {
    throw new FrameError("bad_frame", 'Missing field "type": expected a string', validRef);
  }
  if (!Object.hasOwn(REQUESTS, type)) {
    throw new FrameError("bad_frame", `Unknown type "${type.slice(0, 64)}"`, validRef);
  }
  const schema = REQUESTS[type as RequestType];
  const parsed = schema.safeParse(frame);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = fieldPath(issue.path);
    const missing = issue.code === "invalid_type" && !hasPath(frame, issue.path);
    throw new FrameError(
      "bad_frame",
      missing
        ? `Missing field "${field}" in ${type}`
        : `Invalid field "${field}" in ${type}: ${issue.message}`,
      validRef,
    );
  }
  return { ref: validRef, request: { ...parsed.data, type } as Request };
}

/** A positive whole number within the safe range: what `id` accepts. */
const isId = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) > 0;

/**
 * A well-formed `send` decoded by hand, or null for zod to decode (and explain) instead. `send` is
 * most of the traffic, and zod's object, union and pipe checks cost more than the rest of the
 * frame's way to the outbox (bench: about 15 µs of server CPU per message). Accepts exactly what
 * the schemas accept: `ref` a string of at most 64 characters or a safe integer, `to` exactly one
 * of `{user}` or `{group}` with an id, `text` a string, `clientId` absent or 1 to 64 characters of
 * storable text; unknown fields are dropped, as zod's objects drop them.
 */
function fastSend(frame: Record<string, unknown>): { ref?: Ref; request: Request } | null {
  if (frame.type !== "send") return null;
  const r = frame.ref;
  if (
    r !== undefined &&
    !(typeof r === "string" && r.length <= 64) && !Number.isSafeInteger(r)
  ) return null;
  if (r === undefined && Object.hasOwn(frame, "ref")) return null;
  const to = frame.to;
  if (typeof to !== "object" || to === null || Array.isArray(to)) return null;
  const keys = Object.keys(to);
  if (keys.length !== 1) return null;
  const target = to as Record<string, unknown>;
  let aim: Target;
  if (keys[0] === "user" && isId(target.user)) aim = { user: target.user };
  else if (keys[0] === "group" && isId(target.group)) aim = { group: target.group };
  else return null;
  const text = frame.text;
  if (typeof text !== "string") return null;
  const clientId = frame.clientId;
  if (clientId !== undefined) {
    if (
      typeof clientId !== "string" || clientId.length < 1 || clientId.length > 64 ||
      clientId.includes("\u0000") || !clientId.isWellFormed()
    ) return null;
  } else if (Object.hasOwn(frame, "clientId")) return null;
  const request = clientId === undefined
    ? { type: "send" as const, to: aim, text }
    : { type: "send" as const, to: aim, text, clientId };
  return r === undefined ? { request } : { ref: r as Ref, request };
}

function hasPath(value: unknown, path: readonly PropertyKey[]): boolean {
  let cur = value;
  for (const key of path) {
    if (typeof cur !== "object" || cur === null || !Object.hasOwn(cur, key)) return false;
    cur = (cur as Record<PropertyKey, unknown>)[key];
  }
  return true;
}
