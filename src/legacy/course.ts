/**
 * @module The course protocol's messages (the "cluster chat server" of the muduo course) and their
 * mapping to and from Parley's types. Pure: no sockets, no database. The shapes are the course
 * server's, byte for byte where its client depends on them (see issue 8 and the README).
 */
import { z } from "zod";
import type { Friend, Group, Message, User } from "../chat/chat.ts";

/** The course's `msgid` values. */
export const MSGID = {
  login: 1,
  loginAck: 2,
  logout: 3,
  register: 4,
  registerAck: 5,
  oneChat: 6,
  addFriend: 7,
  createGroup: 8,
  joinGroup: 9,
  groupChat: 10,
} as const;

/** The course server's exact error texts; its users know them. */
export const ERRMSG = {
  badCredentials: "id or password is invalid!",
  alreadyOnline: "this account is using, input another!",
} as const;

/** Course `errno` values of the login ack. 3 is Parley's: the server could not answer now. */
export const ERRNO = { ok: 0, badCredentials: 1, alreadyOnline: 2, unavailable: 3 } as const;

/**
 * An id as the course client sends it (a C++ int). Ids are compared with the logged-in user's and
 * never trusted, so any integer is accepted here and the domain decides whether it exists.
 */
const intId = z.number().int().safe();

/** `id` is the sender as the client claims it; after login it is only compared, never used. */
const claimed = { id: z.unknown().optional() };

const login = z.object({ msgid: z.literal(MSGID.login), id: intId, password: z.string() });
const register = z.object({
  msgid: z.literal(MSGID.register),
  name: z.unknown(),
  password: z.unknown(),
});
const logout = z.object({ msgid: z.literal(MSGID.logout), ...claimed });
const oneChat = z.object({
  msgid: z.literal(MSGID.oneChat),
  ...claimed,
  toid: intId,
  msg: z.unknown(),
});
const addFriend = z.object({ msgid: z.literal(MSGID.addFriend), ...claimed, friendid: intId });
const createGroup = z.object({
  msgid: z.literal(MSGID.createGroup),
  ...claimed,
  groupname: z.unknown(),
  groupdesc: z.unknown().optional(),
});
const joinGroup = z.object({ msgid: z.literal(MSGID.joinGroup), ...claimed, groupid: intId });
const groupChat = z.object({
  msgid: z.literal(MSGID.groupChat),
  ...claimed,
  groupid: intId,
  msg: z.unknown(),
});

/**
 * A request the server acts on. Text fields stay `unknown` here: the domain's own rules (names,
 * passwords, message text) check them, so both transports reject the same input the same way.
 */
export const courseRequest = z.discriminatedUnion("msgid", [
  login,
  register,
  logout,
  oneChat,
  addFriend,
  createGroup,
  joinGroup,
  groupChat,
]);

export type CourseRequest = z.infer<typeof courseRequest>;

export type Decoded =
  | { ok: true; request: CourseRequest }
  | { ok: false; msgid: number | null; reason: string };

/** Checks one object against the request shapes; on failure says which field, never its value. */
export function decodeRequest(value: Record<string, unknown>): Decoded {
  const parsed = courseRequest.safeParse(value);
  if (parsed.success) return { ok: true, request: parsed.data };
  const msgid = typeof value.msgid === "number" ? value.msgid : null;
  const issue = parsed.error.issues[0];
  const field = issue?.path.join(".") || "msgid";
  const why = !issue || /received undefined/.test(issue.message) ? "missing" : issue.message;
  return { ok: false, msgid, reason: `invalid field "${field}": ${why}` };
}

/** The course's state words. */
const state = (online: boolean) => online ? "online" : "offline";

/**
 * The login ack. `friends` and `groups` are arrays of strings, each one JSON object, as the course
 * server built them (its client parses each string again); a key is left out when its array would
 * be empty, as the course server did. Group roles are the course's "creator" and "normal".
 */
export function loginAck(user: User, friends: Friend[], groups: Group[]): Record<string, unknown> {
  return {
    msgid: MSGID.loginAck,
    errno: ERRNO.ok,
    id: user.id,
    name: user.name,
    ...(friends.length > 0
      ? {
        friends: friends.map((f) =>
          JSON.stringify({ id: f.id, name: f.name, state: state(f.online) })
        ),
      }
      : {}),
    ...(groups.length > 0
      ? {
        groups: groups.map((g) =>
          JSON.stringify({
            id: g.id,
            groupname: g.name,
            groupdesc: g.description,
            users: g.members.map((m) =>
              JSON.stringify({
                id: m.id,
                name: m.name,
                state: state(m.online),
                role: m.role === "creator" ? "creator" : "normal",
              })
            ),
          })
        ),
      }
      : {}),
  };
}

export function loginError(errno: number, errmsg: string): Record<string, unknown> {
  return { msgid: MSGID.loginAck, errno, errmsg };
}

export function registerAck(id: number): Record<string, unknown> {
  return { msgid: MSGID.registerAck, errno: 0, id };
}

export function registerError(errmsg: string): Record<string, unknown> {
  return { msgid: MSGID.registerAck, errno: 1, errmsg };
}

/** "YYYY-MM-DD HH:MM:SS" in UTC, the course's time format, from an ISO-8601 UTC time. */
export function courseTime(iso: string): string {
  const at = new Date(iso);
  return Number.isNaN(at.getTime()) ? "" : at.toISOString().slice(0, 19).replace("T", " ");
}

/** A Parley message as the course client receives it: msgid 6 (one-to-one) or 10 (group). */
export function chatObject(message: Message): Record<string, unknown> {
  const head = { id: message.from.id, name: message.from.name };
  const time = courseTime(message.at);
  if ("group" in message.to) {
    return { msgid: MSGID.groupChat, ...head, groupid: message.to.group, msg: message.text, time };
  }
  return { msgid: MSGID.oneChat, ...head, toid: message.to.user, msg: message.text, time };
}
