/**
 * @module One WebSocket's conversation with Parley: decodes frames, runs them in order against the
 * chat domain, encodes replies and pushes. It sees the socket only through `SocketLike`, so it runs
 * the same under any server adapter and in tests.
 */
import type { Chat, Message } from "../chat/chat.ts";
import { ChatError, toChatError } from "../chat/errors.ts";
import type { Logger } from "../log.ts";
import type { Metrics } from "../metrics.ts";
import { decodeFrame, FrameError, type Ref, type Request } from "./protocol.ts";
import type { Notice, Peer, Registry } from "./registry.ts";
import { TokenBucket } from "./rate_limit.ts";
import { bounded } from "../time.ts";

/** What this module needs of a WebSocket. */
export interface SocketLike {
  send(text: string): void;
  close(code: number, reason: string): void;
  readonly bufferedAmount: number;
}

export const CLOSE = {
  logout: 1000,
  goingAway: 1001,
  policy: 1008,
  tooBig: 1009,
  replaced: 4001,
} as const;

export interface SocketOptions {
  chat: Chat;
  registry: Registry;
  log: Logger;
  authTimeoutMs: number;
  maxFrameBytes: number;
  rateLimitPerSec: number;
  rateLimitBurst: number;
  /** A socket whose unsent bytes pass this is closed: it reads too slowly to keep up. */
  maxBufferedBytes: number;
  metrics: Metrics;
}

const BAD_FRAMES_PER_MIN = 50;

/**
 * A request still running after this answers `unavailable`: a database that does not answer
 * (a cut network holds queries until TCP gives up) must not hang the client, nor the requests
 * queued behind it on this socket.
 */
const REQUEST_DEADLINE_MS = 8000;
/** After the deadline, how long a request whose work is under way may still finish. */
const DEADLINE_GRACE_MS = 1000;

class DeadlineError extends ChatError {
  constructor() {
    super(
      "unavailable",
      `The database did not answer within ${
        REQUEST_DEADLINE_MS / 1000
      } s: retry later (a retry with the same clientId is never stored twice)`,
    );
  }
}

type Reply = Record<string, unknown> & { type: string };

/** One settled promise for every idle socket's queues to start from, rather than two each. */
const SETTLED: Promise<void> = Promise.resolve();

/**
 * A message's push frame, encoded once however many sockets it goes to: a group message reaches
 * every member's sockets on this node with the same object.
 */
const pushFrames = new WeakMap<Message, string>();
function pushFrame(message: Message): string {
  let text = pushFrames.get(message);
  if (text === undefined) {
    pushFrames.set(message, text = JSON.stringify({ type: "message", message }));
  }
  return text;
}

export class ChatSocket implements Peer {
  userId: number | null = null;
  sessionId: number | null = null;
  #token: string | null = null;
  #closed = false;
  /** Answers, in request order. */
  #queue: Promise<void> = SETTLED;
  /** When the next request may start. */
  #gate: Promise<void> = SETTLED;
  #authTimer: ReturnType<typeof setTimeout> | undefined;
  /** Times of recent bad frames; allocated at the first one. */
  #badFrames: number[] | null = null;
  /** Set when the request running now passed its deadline and was answered `unavailable`. */
  #gaveUp = false;
  #bucket: TokenBucket;
  #log: Logger;
  readonly ended: Promise<void>;
  #resolveEnded!: () => void;

  constructor(
    private readonly socket: SocketLike,
    private readonly o: SocketOptions,
    /** The client's address, for the login and registration throttles. */
    private readonly address: string,
  ) {
    this.#bucket = new TokenBucket(o.rateLimitPerSec, o.rateLimitBurst);
    this.#log = o.log;
    this.ended = new Promise((resolve) => this.#resolveEnded = resolve);
  }

  /** The socket is open: start the login clock. */
  opened(): void {
    this.o.registry.add(this);
    this.#authTimer = setTimeout(() => {
      if (this.userId === null) this.close(CLOSE.policy, "Log in within the time allowed");
    }, this.o.authTimeoutMs);
  }

  /** Drops the timer object too: an idle socket keeps nothing of its login clock. */
  #stopAuthTimer(): void {
    clearTimeout(this.#authTimer);
    this.#authTimer = undefined;
  }

  /** A frame arrived. Never throws: every failure becomes an error reply. */
  received(data: unknown): void {
    if (this.#closed) return;
    if (typeof data !== "string") {
      const error = new FrameError("bad_frame", "Binary frames are not accepted: send JSON text");
      this.#inOrder(() => this.#reject(error));
      return;
    }
    if (
      data.length > this.o.maxFrameBytes / 3 &&
      new TextEncoder().encode(data).length > this.o.maxFrameBytes
    ) {
      this.close(CLOSE.tooBig, `Frames are limited to ${this.o.maxFrameBytes} bytes`);
      return;
    }
    let decoded: { ref?: Ref; request: Request };
    try {
      decoded = decodeFrame(data);
    } catch (error) {
      // decodeFrame throws FrameError; anything else (a parser giving up on a pathological frame)
      // is a bad frame all the same.
      const frameError = error instanceof FrameError ? error : new FrameError(
        "bad_frame",
        "The frame could not be read: send one JSON object per frame",
      );
      this.#inOrder(() => this.#reject(frameError));
      return;
    }
    const { ref, request } = decoded;
    // Typing takes its token once past its own throttle (see #typing): a flood of it is dropped
    // silently, never answered `rate_limited`.
    const wait = request.type === "ack" || request.type === "typing" ? 0 : this.#bucket.take();
    if (wait > 0) {
      const error = new ChatError("rate_limited", `Too many requests: retry in ${wait} ms`, wait);
      this.#inOrder(() => this.#error(error, ref));
      return;
    }
    const arrived = performance.now();
    // A request starts once the one before it has finished, except after a send, which only has
    // to be handed to the outbox: sends pipeline into group commits. Answers still leave in the
    // order the requests came in.
    let submitted!: () => void;
    const afterSubmit = new Promise<void>((resolve) => submitted = resolve);
    const outcome = this.#gate.then(() => {
      const running = this.#run(request, ref, arrived);
      submitted();
      return running;
    });
    this.#gate = request.type === "send" ? afterSubmit : outcome.then(() => {});
    this.#inOrder(async () => {
      const answer = await outcome;
      if (answer) this.send(answer);
      if (request.type === "logout" && answer?.type === "bye") {
        this.close(CLOSE.logout, "Logged out");
      }
    });
  }

  /** Puts `work` (sending an answer) after every answer of earlier requests. */
  #inOrder(work: () => void | Promise<void>): void {
    this.#queue = this.#queue.then(work);
  }

  /** Runs a request; resolves to the frame to answer with, never rejects. */
  async #run(request: Request, ref: Ref | undefined, arrived: number): Promise<Reply | null> {
    if (this.#closed) return null;
    const withRef = (frame: Reply) => ({ ...frame, ...(ref !== undefined ? { ref } : {}) });
    try {
      const reply = await this.#deadline(arrived, (signal) => this.#dispatch(request, ref, signal));
      return reply ? withRef(reply) : null;
    } catch (error) {
      const chatError = toChatError(error);
      if (request.type === "login") this.o.metrics.logins.inc({ result: chatError.code });
      if (chatError.code === "unavailable") this.o.metrics.dbErrors.inc();
      if (chatError.code === "internal") {
        this.#log.error("ws.internal", {
          error,
          code: (error as { code?: unknown })?.code,
          ref,
          type: request.type,
          user: this.userId ?? undefined,
        });
      } else {
        this.#log.debug("ws.request_failed", { code: chatError.code, ref, type: request.type });
      }
      return this.#errorFrame(chatError, ref);
    }
  }

  /**
   * `start(signal)`, or a DeadlineError once REQUEST_DEADLINE_MS have passed since the request
   * arrived. At the deadline `signal` aborts (a send not yet in a batch is then never stored) and
   * the work gets a short grace to settle, so that a send whose commit was under way is answered
   * truthfully. A login that finishes after giving up checks `#gaveUp` and undoes its session.
   */
  async #deadline<T>(arrived: number, start: (signal: AbortSignal) => Promise<T> | T): Promise<T> {
    const left = REQUEST_DEADLINE_MS - (performance.now() - arrived);
    if (left <= 0) throw new DeadlineError();
    const abort = new AbortController();
    const work = start(abort.signal);
    if (!(work instanceof Promise)) return work;
    // Wrapped, so that a request whose result is undefined is not taken for one that timed out.
    const settled = work.then((value) => ({ value }));
    const first = await bounded(settled, left);
    if (first) return first.value;
    abort.abort(new DeadlineError());
    const late = await bounded(settled, DEADLINE_GRACE_MS);
    if (late) return late.value;
    this.#gaveUp = true;
    throw new DeadlineError();
  }

  #dispatch(
    request: Request,
    ref: Ref | undefined,
    signal: AbortSignal,
  ): Promise<Reply | null> | Reply | null {
    if (request.type === "ping") return { type: "pong" };
    if (this.userId === null) {
      if (request.type === "register") return this.#register(request.name, request.password);
      if (request.type === "login") return this.#login(request, ref);
      throw new ChatError("unauthenticated", `Log in before "${request.type}"`);
    }
    const chat = this.o.chat;
    const me = this.userId;
    switch (request.type) {
      case "register":
      case "login":
        throw new ChatError("bad_frame", `Already logged in: "${request.type}" needs a new socket`);
      case "send": {
        const started = performance.now();
        return chat.send(me, request.to, request.text, request.clientId, signal).then((message) => {
          this.o.metrics.sendCommitSeconds.observe((performance.now() - started) / 1000);
          this.o.metrics.messagesSent.inc();
          return { type: "sent", message };
        });
      }
      case "ack":
        return chat.ack(me, request.ids).then(() => null);
      case "friend.add":
        return chat.addFriend(me, request.user).then((friend) => ({
          type: "friend.added",
          friend,
        }));
      case "group.create":
        return chat.createGroup(me, request.name, request.description).then((group) => ({
          type: "group.created",
          group,
        }));
      case "group.join":
        return chat.joinGroup(me, request.group).then((group) => ({ type: "group.joined", group }));
      case "history":
        return chat.history(me, request.with, request.before ?? null, request.limit ?? 50).then((
          messages,
        ) => ({ type: "history", messages }));
      case "logout":
        return this.#logout();
      case "user.search":
        return chat.people.search(me, request.query).then((users) => ({ type: "users", users }));
      case "friend.remove":
        return chat.people.removeFriend(me, request.user, this.sessionId ?? undefined).then(() => ({
          type: "friend.removed",
          user: request.user,
        }));
      case "user.block":
        return chat.people.block(me, request.user, this.sessionId ?? undefined).then(() => ({
          type: "blocked",
          user: request.user,
        }));
      case "user.unblock":
        return chat.people.unblock(me, request.user).then(() => ({
          type: "unblocked",
          user: request.user,
        }));
      case "group.leave":
        return chat.people.leaveGroup(me, request.group, this.sessionId ?? undefined).then(() => ({
          type: "group.left",
          group: request.group,
        }));
      case "typing":
        return this.#typing(me, request.to);
    }
  }

  /**
   * Never answered but with an error. One passed on within the last second (by this node's
   * record), or one past the socket's rate limit, is dropped before it costs a query.
   */
  async #typing(me: number, to: Extract<Request, { type: "typing" }>["to"]): Promise<null> {
    const people = this.o.chat.people;
    if (!people.typingDue(me, to)) return null;
    if (this.#bucket.take() > 0) return null;
    await people.typing(me, to);
    return null;
  }

  async #register(name: string, password: string): Promise<Reply> {
    const user = await this.o.chat.register(name, password, this.address);
    this.#log.info("account.registered", { user: user.id });
    return { type: "registered", user };
  }

  /** Sends `welcome` itself, then the waiting messages, so that nothing overtakes the welcome. */
  async #login(request: Extract<Request, { type: "login" }>, ref: Ref | undefined): Promise<null> {
    const credentials = request.token !== undefined
      ? { token: request.token }
      : { name: request.name!, password: request.password! };
    this.#gaveUp = false;
    const { user, token, sessionId } = await this.o.chat.login(credentials, "ws", this.address);
    this.o.metrics.logins.inc({ result: "ok" });
    if (this.#closed || this.#gaveUp) {
      // The socket went away, or was told `unavailable`, while the login ran: undo its session.
      await this.o.chat.endSession(sessionId);
      return null;
    }
    this.#stopAuthTimer();
    this.userId = user.id;
    this.sessionId = sessionId;
    this.#token = token;
    // Listed before the waiting messages are read: a message committed after this point is pushed
    // live, one committed before is in the waiting set, and one in between may come both ways,
    // which clients absorb by id.
    this.o.registry.bind(this);
    this.#log.info("session.opened", { user: user.id, session: sessionId });
    const overview = await this.o.chat.overview(user.id);
    this.send({ type: "welcome", ...(ref !== undefined ? { ref } : {}), user, token, ...overview });
    await this.replayWaiting();
    return null;
  }

  async #logout(): Promise<Reply> {
    const sessionId = this.sessionId!;
    this.o.registry.unbind(this);
    this.userId = null;
    this.sessionId = null;
    await this.o.chat.logout(sessionId, this.#token);
    this.#token = null;
    return { type: "bye" };
  }

  /** Pushes what waited for this user while it was away, oldest first, after `welcome`. */
  async replayWaiting(): Promise<void> {
    let after = 0;
    while (!this.#closed && this.userId !== null) {
      const page = await this.o.chat.waiting(this.userId, after);
      for (const message of page) this.push(message);
      if (page.length === 0) return;
      after = page[page.length - 1].id;
    }
  }

  push(message: Message): void {
    this.o.metrics.messagesDelivered.inc();
    this.#write(pushFrame(message));
  }

  notify(notice: Notice): void {
    this.send(notice);
  }

  send(frame: Record<string, unknown>): void {
    this.#write(JSON.stringify(frame));
  }

  #write(text: string): void {
    if (this.#closed) return;
    if (this.socket.bufferedAmount > this.o.maxBufferedBytes) {
      // Its unacknowledged messages stay waiting for its next login. A peer that reads nothing
      // will not read the close frame either, so its session ends now, not at the close event.
      this.#log.warn("ws.too_slow", {
        user: this.userId ?? undefined,
        buffered: this.socket.bufferedAmount,
      });
      this.close(CLOSE.policy, "Reading too slowly: reconnect and read faster");
      void this.closedByPeer();
      return;
    }
    try {
      this.socket.send(text);
    } catch (error) {
      this.#log.debug("ws.send_failed", { error: String(error) });
    }
  }

  /**
   * Answers an error. Malformed requests (bad_json, bad_frame) are also counted: past 50 in a
   * minute the socket is closed with 1008 instead, since a client that keeps sending them is broken
   * or hostile.
   */
  #error(error: ChatError, ref: Ref | undefined) {
    const frame = this.#errorFrame(error, ref);
    if (frame) this.send(frame);
  }

  /**
   * The answer to a failed request. Malformed requests (bad_json, bad_frame) are also counted:
   * past 50 in a minute the socket is closed with 1008 instead, and there is no answer.
   */
  #errorFrame(error: ChatError, ref: Ref | undefined): Reply | null {
    if (error.code === "bad_json" || error.code === "bad_frame") {
      this.o.metrics.badFrames.inc({ code: error.code });
      const now = performance.now();
      this.#badFrames = (this.#badFrames ?? []).filter((t) => now - t < 60_000);
      if (this.#badFrames.length >= BAD_FRAMES_PER_MIN) {
        this.close(CLOSE.policy, "Too many bad frames: fix the client");
        return null;
      }
      this.#badFrames.push(now);
    }
    return {
      type: "error",
      ...(ref !== undefined ? { ref } : {}),
      code: error.code,
      message: error.message,
      ...(error.retryAfterMs !== undefined ? { retryAfterMs: error.retryAfterMs } : {}),
    };
  }

  #reject(error: FrameError) {
    this.#error(error, error.ref);
  }

  /** Closes the socket; `ended` resolves once the close event has run. */
  close(code: number, reason: string): void {
    if (this.#closed) return;
    try {
      this.socket.close(code, reason);
    } catch (error) {
      this.#log.debug("ws.close_failed", { error: String(error) });
      void this.closedByPeer();
    }
  }

  /** The socket is closed (either side): end the session and unlist it. Runs once. */
  async closedByPeer(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#stopAuthTimer();
    this.o.registry.remove(this);
    const sessionId = this.sessionId;
    try {
      // Let a request in flight finish first, so that its session row exists to be ended.
      await this.#queue;
      if (sessionId !== null) {
        await this.o.chat.endSession(sessionId);
        this.#log.info("session.closed", { user: this.userId ?? undefined, session: sessionId });
      }
    } catch (error) {
      // The drain or the reaper ends sessions left behind; nothing more can be done here.
      this.#log.warn("session.close_failed", {
        error: String(error),
        session: sessionId ?? undefined,
      });
    } finally {
      this.#resolveEnded();
    }
  }
}
