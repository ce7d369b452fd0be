/**
 * @module The terminal client's commands, in the course client's syntax (`chat:<userid>:<text>`),
 * parsed into typed values. A malformed command yields the help line of that command.
 */

export type Command =
  | { kind: "help" }
  | { kind: "chat"; user: number; text: string }
  | { kind: "addfriend"; user: number }
  | { kind: "creategroup"; name: string; description: string }
  | { kind: "addgroup"; group: number }
  | { kind: "groupchat"; group: number; text: string }
  | { kind: "history"; user: number }
  | { kind: "ghistory"; group: number }
  | { kind: "edit"; id: number; text: string }
  | { kind: "delete"; id: number }
  | { kind: "find"; prefix: string }
  | { kind: "unfriend"; user: number }
  | { kind: "block"; user: number }
  | { kind: "unblock"; user: number }
  | { kind: "leavegroup"; group: number }
  | { kind: "loginout" };

type Kind = Command["kind"];

/** Each command's syntax and what it does, in the order `help` lists them. */
export const HELP: readonly { kind: Kind; usage: string; does: string }[] = [
  { kind: "help", usage: "help", does: "show the commands" },
  { kind: "chat", usage: "chat:<userid>:<text>", does: "send <text> to user <userid>" },
  { kind: "addfriend", usage: "addfriend:<userid>", does: "add user <userid> as a friend" },
  {
    kind: "creategroup",
    usage: "creategroup:<name>:<description>",
    does: "create a group (the description may be empty)",
  },
  { kind: "addgroup", usage: "addgroup:<groupid>", does: "join group <groupid>" },
  {
    kind: "groupchat",
    usage: "groupchat:<groupid>:<text>",
    does: "send <text> to group <groupid>",
  },
  { kind: "history", usage: "history:<userid>", does: "the last 20 messages with user <userid>" },
  {
    kind: "ghistory",
    usage: "ghistory:<groupid>",
    does: "the last 20 messages of group <groupid>",
  },
  {
    kind: "edit",
    usage: "edit:<messageid>:<text>",
    does: "change the text of your message <messageid>",
  },
  { kind: "delete", usage: "delete:<messageid>", does: "delete your message <messageid>" },
  { kind: "find", usage: "find:<prefix>", does: "people whose name starts with <prefix>" },
  { kind: "unfriend", usage: "unfriend:<userid>", does: "end the friendship with <userid>" },
  {
    kind: "block",
    usage: "block:<userid>",
    does: "refuse messages and friend requests from <userid>",
  },
  { kind: "unblock", usage: "unblock:<userid>", does: "lift the block of <userid>" },
  { kind: "leavegroup", usage: "leavegroup:<groupid>", does: "leave group <groupid>" },
  { kind: "loginout", usage: "loginout", does: "log out and go back to the menu" },
];

const WIDTH = Math.max(...HELP.map((h) => h.usage.length)) + 2;

function helpLine(h: (typeof HELP)[number]): string {
  return `${h.usage.padEnd(WIDTH)}${h.does}`;
}

export function helpText(): string {
  return ["commands:", ...HELP.map((h) => `  ${helpLine(h)}`)].join("\n");
}

/** The help line of one command, as printed after a malformed use of it. */
export function usageOf(kind: Kind): string {
  const h = HELP.find((h) => h.kind === kind)!;
  return `usage: ${h.usage}  (${h.does})`;
}

export type Parsed = { ok: true; command: Command } | { ok: false; error: string };

const ID = /^\s*([1-9]\d{0,15})\s*$/;

function id(text: string | undefined): number | null {
  const match = text === undefined ? null : ID.exec(text);
  if (!match) return null;
  const value = Number(match[1]);
  return Number.isSafeInteger(value) ? value : null;
}

/** Splits at the first `:` only: the text of a message may hold more. */
function split(rest: string): [string, string | undefined] {
  const at = rest.indexOf(":");
  return at < 0 ? [rest, undefined] : [rest.slice(0, at), rest.slice(at + 1)];
}

export function parseCommand(line: string): Parsed {
  const [head, rest] = split(line.trim());
  const name = head.trim().toLowerCase();
  const ok = (command: Command): Parsed => ({ ok: true, command });
  const bad = (kind: Kind): Parsed => ({ ok: false, error: usageOf(kind) });
  switch (name) {
    case "help":
      return rest === undefined ? ok({ kind: "help" }) : bad("help");
    case "loginout":
    case "logout":
      return rest === undefined ? ok({ kind: "loginout" }) : bad("loginout");
    case "chat":
    case "groupchat": {
      const [target, text] = split(rest ?? "");
      const to = id(target);
      if (to === null || text === undefined || text.trim() === "") return bad(name);
      return ok(
        name === "chat"
          ? { kind: "chat", user: to, text: text.trim() }
          : { kind: "groupchat", group: to, text: text.trim() },
      );
    }
    case "addfriend":
    case "unfriend":
    case "block":
    case "unblock":
    case "history": {
      const user = id(rest);
      return user === null ? bad(name) : ok({ kind: name, user });
    }
    case "edit": {
      const [target, text] = split(rest ?? "");
      const message = id(target);
      if (message === null || text === undefined || text.trim() === "") return bad("edit");
      return ok({ kind: "edit", id: message, text: text.trim() });
    }
    case "delete": {
      const message = id(rest);
      return message === null ? bad("delete") : ok({ kind: "delete", id: message });
    }
    case "find": {
      const prefix = (rest ?? "").trim();
      return prefix === "" ? bad("find") : ok({ kind: "find", prefix });
    }
    case "addgroup":
    case "leavegroup":
    case "ghistory": {
      const group = id(rest);
      return group === null ? bad(name) : ok({ kind: name, group });
    }
    case "creategroup": {
      const [groupName, description] = split(rest ?? "");
      if (rest === undefined || groupName.trim() === "") return bad("creategroup");
      return ok({
        kind: "creategroup",
        name: groupName.trim(),
        description: (description ?? "").trim(),
      });
    }
  }
  return {
    ok: false,
    error: `Unknown command "${head.trim().slice(0, 40)}": type help to see the commands`,
  };
}
