/**
 * @module How the terminal client prints what the protocol carries: users, friends, groups and
 * messages, in the course client's plain style.
 */

export interface User {
  id: number;
  name: string;
}
export interface Friend extends User {
  online: boolean;
}
export interface Member extends Friend {
  role: "creator" | "member";
}
export interface Group {
  id: number;
  name: string;
  description: string;
  members: Member[];
}
export interface Message {
  id: number;
  /** Its position in its conversation's log. */
  seq: number;
  from: User;
  to: { user: number } | { group: number };
  text: string;
  at: string;
  clientId?: string;
  editedAt?: string;
  deleted?: boolean;
}

const RULE = "=".repeat(56);

const pad = (n: number) => String(n).padStart(2, "0");

/** Local time, to the second: `2026-11-26 07:19:02`. */
export function formatTime(iso: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export const who = (user: User) => `${user.name} (${user.id})`;

const presence = (online: boolean) => online ? "online" : "offline";

function section(title: string): string {
  const left = Math.floor((RULE.length - title.length - 2) / 2);
  return `${"-".repeat(left)} ${title} ${"-".repeat(RULE.length - left - title.length - 2)}`;
}

/**
 * `#<message id> [time] name (id): text`, with `[group <id>] ` after the message id for a group;
 * later lines indented. The message id is what `edit:` and `delete:` take. An edited message ends
 * with `(edited)`; a deleted one reads `(deleted)`.
 */
export function formatMessage(message: Message): string {
  const where = "group" in message.to ? `[group ${message.to.group}] ` : "";
  const head = `#${message.id} ${where}[${formatTime(message.at)}] ${who(message.from)}: `;
  if (message.deleted) return `${head}(deleted)`;
  return head + message.text.split("\n").join(`\n${" ".repeat(4)}`) +
    (message.editedAt ? " (edited)" : "");
}

export function formatGroup(group: Group): string {
  const lines = [`${group.id} ${group.name}${group.description ? `: ${group.description}` : ""}`];
  for (const m of group.members) {
    lines.push(`    ${m.id} ${m.name} ${m.role} ${presence(m.online)}`);
  }
  return lines.join("\n");
}

/** What the course client printed after login: the user, friends, groups. */
export function formatOverview(user: User, friends: Friend[], groups: Group[]): string {
  return [
    RULE,
    `current user: ${who(user)}`,
    section("friends"),
    ...(friends.length > 0
      ? friends.map((f) => `${f.id} ${f.name} ${presence(f.online)}`)
      : ["(none yet: addfriend:<userid>)"]),
    section("groups"),
    ...(groups.length > 0
      ? groups.map(formatGroup)
      : ["(none yet: creategroup:<name>:<description> or addgroup:<groupid>)"]),
    RULE,
  ].join("\n");
}

/** A conversation as `welcome` lists it. */
export interface Conversation {
  with: { user: number } | { group: number };
  lastSeq: number;
  unread: number;
}

/**
 * The conversations with unread messages, as the server counts them for every device of the user:
 * `unread: 3 from bob (2)`, `unread: 1 in group 4 "Night owls"`. Null when all is read.
 */
export function formatUnread(
  conversations: Conversation[],
  name: (target: Conversation["with"]) => string,
): string | null {
  const lines = conversations.filter((c) => c.unread > 0).map((c) =>
    `unread: ${c.unread} ${"group" in c.with ? "in" : "from"} ${name(c.with)}`
  );
  return lines.length === 0 ? null : lines.join("\n");
}

export function formatWaiting(messages: Message[]): string {
  if (messages.length === 0) return "no messages waiting";
  return [section(`waiting messages: ${messages.length}`), ...messages.map(formatMessage)].join(
    "\n",
  );
}

export const MENU = [RULE, "1. login", "2. register", "3. quit", RULE].join("\n");
