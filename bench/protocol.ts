/**
 * @module The line protocol between the bench and its load-generator processes: one JSON object per
 * line each way, a request `{id, ...command}` answered by `{id, result}` or `{id, error}`.
 */

export type Target = { user: number } | { group: number };

/** How one user logs in: a token, or a name and password. */
export interface Login {
  user: number;
  name?: string;
  password?: string;
  token?: string;
}

/**
 * "parley" speaks PROTOCOL.md; "raw" speaks the relay's `login {user}` (bench/raw_relay.ts), with
 * the same `send`, `sent` and `message` shapes.
 */
export type Flavour = "parley" | "raw";

/** Opens one socket per login and logs it in, at most `concurrency` at a time. */
export interface ConnectCommand {
  cmd: "connect";
  url: string;
  flavour: Flavour;
  logins: Login[];
  concurrency: number;
  /** Bench clock time to begin at, so that several processes start together. */
  startAt: number;
  deadlineMs: number;
  /** Return the token each welcome carries (after password logins). */
  keepTokens: boolean;
}

export interface ConnectResult {
  ok: number;
  /** Failures by error code, or "connect", "closed", "timeout". */
  failed: Record<string, number>;
  /** Milliseconds from opening the socket to `welcome`, one per successful login. */
  latencies: number[];
  lastDoneAt: number;
  tokens: Record<string, string>;
  /** Users whose login failed, so that the bench may try them again. */
  failedUsers: number[];
}

export interface SendPlan {
  from: number;
  to: Target;
  count: number;
}

/**
 * Sends and counts messages. Closed loop (`ratePerSender` unset): each sender keeps up to `window`
 * sends waiting for `sent`. Open loop: each sender sends `ratePerSender` a second on a fixed
 * schedule whatever the replies, and latency runs from the scheduled time.
 */
export interface RunCommand {
  cmd: "run";
  /** Starts every message text, so that only this run's pushes are counted. */
  tag: string;
  startAt: number;
  senders: SendPlan[];
  window: number;
  ratePerSender?: number;
  /** Pushes of this run that this process's sockets are to receive; the run ends when all have. */
  expectReceipts: number;
  /** Acknowledge received messages in batches every `ackEveryMs` (Parley only). */
  ack: boolean;
  ackEveryMs: number;
  clientIds: boolean;
  /** Characters of padding added to each text, to set the message size. */
  padding: number;
  deadlineMs: number;
}

export interface RunResult {
  planned: number;
  sent: number;
  confirmed: number;
  errors: Record<string, number>;
  /** The first message the server gave with each error code. */
  errorMessages: Record<string, string>;
  received: number;
  duplicates: number;
  /** Send (or scheduled send) to receipt, milliseconds. */
  latencies: number[];
  /** Send to `sent`, milliseconds. */
  confirmLatencies: number[];
  lastSendAt: number;
  lastReceiptAt: number;
  timedOut: boolean;
  /** Every send was answered but receipts were still missing after a quiet spell. */
  stalled: boolean;
}

export interface SocketsResult {
  open: number;
  /** Close codes seen so far, with counts. */
  closeCodes: Record<string, number>;
}

export type Command =
  | { cmd: "now" }
  | { cmd: "offset"; ms: number }
  | ConnectCommand
  | RunCommand
  | { cmd: "closeAll"; deadlineMs: number }
  /** Waits for the sockets to `url` (all when omitted) to close. */
  | { cmd: "waitClosed"; deadlineMs: number; url?: string }
  | { cmd: "sockets" }
  | { cmd: "exit" };

/** The wall clock in milliseconds with sub-millisecond resolution. */
export function wallClock(): number {
  return performance.timeOrigin + performance.now();
}
