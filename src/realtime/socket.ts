/**
 * @module One WebSocket's conversation with Parley: decodes frames, runs them in order against the
 * chat domain, encodes replies and pushes. It sees the socket only through `SocketLike`, so it runs
 * the same under any server adapter and in tests.
 */
import { type Chat, eventSeq, type LogEvent, type Message, type Range } from "../chat/chat.ts";
import { ChatError, toChatError } from "../chat/errors.ts";
import type { Logger } from "../log.ts";
import type { Metrics } from "../metrics.ts";
import { decodeFrame, FrameError, type Ref, type Request } from "./protocol.ts";
import type { Notice, Peer, Registry } from "./registry.ts";
import { TokenBucket } from "./rate_limit.ts";
import { Sequencer } from "./sequencer.ts";
import { roughlyBounded } from "../time.ts";

/** What this module needs of a WebSocket. */
export interface SocketLike {
  send(text: string): void;
  close(code: number, reason: string): void;
  readonly bufferedAmount: number;
}

export const CLOSE = {
  logout: 1000,
  goingAway: 1001,
  internal: 1011,
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
/** Where a `sent` reply stands in its conversation's log, for the sequencer. */
const positions = new WeakMap<Reply, { conversation: number; direct: boolean; seq: number }>();

/** Events read per query during catch-up. */
const CATCH_UP_PAGE = 500;

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

/** The conversation of `message` as user `me` names it (PROTOCOL.md: `with`). */
function withOf(message: Message, me: number): { user: number } | { group: number } {
  if ("group" in message.to) return { group: message.to.group };
  return { user: message.to.user === me ? message.from.id : message.to.user };
}

/** An edit or deletion as pushed to `me`, or as the reply to its own request. */
function changeFrame(event: LogEvent, me: number): Reply {
  const seq = eventSeq(event);
  return event.change!.kind === "edited"
    ? { type: "message.edited", message: event.message, seq }
    : { type: "message.deleted", with: withOf(event.message, me), id: event.message.id, seq };
}

export class ChatSocket implements Peer {
  userId: number | null = null;
  sessionId: number | null = null;
  #token: string | null = null;
  #device: string | null = null;
  /** Orders this user's events on the socket; made at login. */
  #sequencer: Sequencer | null = null;
  /** Sends received and not yet answered. */
  #sending = 0;
  /** Requests received that have not started yet: each waits for the one before it. */
  #waiting = 0;
  /** Acks and reads of this socket not yet written. */
  #movingCursors = 0;
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

  #newSequencer(user: number): Sequencer {
    return new Sequencer({
      streamStart: (conversation) => this.o.chat.streamStart(user, conversation),
      fetch: (conversation, after, upTo) =>
        this.o.chat.events([{ conversation, after, upTo }], CATCH_UP_PAGE),
      emit: (event) => {
        if (event.change) return this.send(changeFrame(event, this.userId!));
        this.o.metrics.messagesDelivered.inc();
        this.#write(pushFrame(event.message));
      },
      failed: (error) => {
        this.#log.warn("ws.fill_failed", { error: String(error), user: this.userId ?? undefined });
        this.close(CLOSE.internal, "Could not read the conversation log: reconnect");
      },
      pendingReplies: () => this.#sending,
    });
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
    // Whatever this frame asks, its answer comes after this socket's ack or read being written:
    // no point in waiting out the cursor batch's window as well.
    if (this.#movingCursors > 0) this.o.chat.hurryCursors();
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
    const wait = request.type === "ack" || request.type === "read" || request.type === "typing"
      ? 0
      : this.#bucket.take();
    if (wait > 0) {
      const error = new ChatError("rate_limited", `Too many requests: retry in ${wait} ms`, wait);
      this.#inOrder(() => this.#error(error, ref));
      return;
    }
    const arrived = performance.now();
    if (request.type === "send") this.#sending++;
    // A request starts once the one before it has finished, except after a send, which only has
    // to be handed to the outbox: sends pipeline into group commits. Answers still leave in the
    // order the requests came in.
    let submitted!: () => void;
    const afterSubmit = new Promise<void>((resolve) => submitted = resolve);
    this.#waiting++;
    const outcome = this.#gate.then(() => {
      this.#waiting--;
      const running = this.#run(request, ref, arrived);
      submitted();
      return running;
    });
    this.#gate = request.type === "send" ? afterSubmit : outcome.then(() => {});
    this.#inOrder(async () => {
      const answer = await outcome;
      const position = answer ? positions.get(answer) : undefined;
      if (answer && position && this.#sequencer) {
        await this.#sequencer.reply(
          position.conversation,
          position.direct,
          position.seq,
          () => this.send(answer),
        );
      } else if (answer) this.send(answer);
      if (request.type === "send") {
        this.#sending--;
        this.#sequencer?.progress();
      }
      if (request.type === "logout" && answer?.type === "bye") {
        this.close(CLOSE.logout, "Logged out");
      }
    });
  }

  /** An ack or read handed to the cursor batch: hurried when a request of this socket waits. */
  async #movingCursor(written: Promise<void>): Promise<null> {
    this.#movingCursors++;
    if (this.#waiting > 0) this.o.chat.hurryCursors();
    try {
      await written;
      return null;
    } finally {
      this.#movingCursors--;
    }
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
      if (!reply) return null;
      const out = withRef(reply);
      const position = positions.get(reply);
      if (position) positions.set(out, position);
      return out;
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
    const first = await roughlyBounded(settled, left);
    if (first) return first.value;
    abort.abort(new DeadlineError());
    const late = await roughlyBounded(settled, DEADLINE_GRACE_MS);
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
        return chat.post(
          me,
          request.to,
          request.text,
          request.clientId,
          signal,
          this.sessionId ?? undefined,
        ).then(({ conversation, message }) => {
          this.o.metrics.sendCommitSeconds.observe((performance.now() - started) / 1000);
          this.o.metrics.messagesSent.inc();
          const reply = { type: "sent", message };
          positions.set(reply, { conversation, direct: "user" in message.to, seq: message.seq });
          return reply;
        });
      }
      case "ack":
        return this.#movingCursor(
          request.ids !== undefined
            ? chat.ack(me, request.ids, this.#device)
            : chat.ackSeq(me, this.#device, request.with!, request.seq!),
        );
      case "read":
        return this.#movingCursor(
          chat.read(me, this.#device, this.sessionId, request.with, request.seq),
        );
      case "message.edit":
      case "message.delete": {
        const change = request.type === "message.edit"
          ? chat.editMessage(me, request.id, request.text, this.sessionId ?? undefined)
          : chat.deleteMessage(me, request.id, this.sessionId ?? undefined);
        return change.then((event) => {
          const pushed = changeFrame(event, me);
          const reply = request.type === "message.edit"
            ? { type: "edited", message: pushed.message, seq: pushed.seq }
            : { type: "deleted", with: pushed.with, id: pushed.id, seq: pushed.seq };
          positions.set(reply, {
            conversation: event.conversation,
            direct: "user" in event.message.to,
            seq: eventSeq(event),
          });
          return reply;
        });
      }
      case "receipts":
        return chat.receipts(me, request.group).then((members) => ({
          type: "receipts",
          group: request.group,
          members,
        }));
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
        return chat.history(
          me,
          request.with,
          { before: request.before ?? null, after: request.after ?? null },
          request.limit ?? 50,
        ).then((messages) => ({ type: "history", messages }));
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
        return chat.people.leaveGroup(me, request.group, this.sessionId ?? undefined).then((
          conversation,
        ) => {
          if (conversation !== null) this.forget(conversation);
          return { type: "group.left", group: request.group };
        });
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

  /**
   * Sends `welcome` itself, then the catch-up, then live events: the socket is listed for live
   * pushes before the catch-up is read, with live events held back until the catch-up is out, so
   * an event committed meanwhile comes once (the sequencer drops the second copy) and in order.
   */
  async #login(request: Extract<Request, { type: "login" }>, ref: Ref | undefined): Promise<null> {
    const credentials = request.token !== undefined
      ? { token: request.token }
      : { name: request.name!, password: request.password! };
    this.#gaveUp = false;
    const { user, token, device, sessionId } = await this.o.chat.login(
      credentials,
      "ws",
      this.address,
    );
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
    this.#device = device;
    const sequencer = this.#sequencer = this.#newSequencer(user.id);
    sequencer.hold();
    this.o.registry.bind(this);
    this.#log.info("session.opened", { user: user.id, session: sessionId });
    await sequencer.release(async () => {
      const overview = await this.o.chat.overview(user.id);
      const catchUp = await this.o.chat.catchUp(
        user.id,
        device,
        overview.groups.map((g) => g.id),
      );
      this.send({
        type: "welcome",
        ...(ref !== undefined ? { ref } : {}),
        protocol: 2,
        user,
        token,
        ...overview,
        conversations: catchUp.conversations,
      });
      for (const [conversation, seq] of catchUp.starts) sequencer.start(conversation, seq);
      await this.#replay(sequencer, catchUp.ranges);
    });
    return null;
  }

  /** Replays the events of `ranges`, a page at a time, in log order. */
  async #replay(sequencer: Sequencer, ranges: Range[]): Promise<void> {
    let left = ranges.map((r) => ({ ...r }));
    while (left.length > 0 && !this.#closed) {
      const page = await this.o.chat.events(left, CATCH_UP_PAGE);
      for (const event of page) sequencer.deliver(event);
      if (page.length < CATCH_UP_PAGE) return;
      const reached = new Map(page.map((e) => [e.conversation, eventSeq(e)]));
      left = left.map((r) => ({ ...r, after: reached.get(r.conversation) ?? r.after }))
        .filter((r) => r.after < r.upTo);
    }
  }

  async #logout(): Promise<Reply> {
    const sessionId = this.sessionId!;
    this.o.registry.unbind(this);
    this.userId = null;
    this.sessionId = null;
    this.#sequencer = null;
    await this.o.chat.logout(sessionId, this.#token);
    this.#token = null;
    this.#device = null;
    return { type: "bye" };
  }

  /**
   * After the bus was away: sends whatever this socket missed of its user's conversations, in
   * order, as a fill between the live events.
   */
  async resync(): Promise<void> {
    const user = this.userId;
    const sequencer = this.#sequencer;
    if (user === null || this.#closed || !sequencer) return;
    await sequencer.task(async () => {
      const catchUp = await this.o.chat.catchUp(user, this.#device, []);
      for (const [conversation, seq] of catchUp.starts) {
        if (sequencer.last(conversation) === undefined) sequencer.start(conversation, seq);
      }
      for (const [conversation, last] of catchUp.lasts) await sequencer.fill(conversation, last);
    });
  }

  /** A live event of one of this user's conversations. */
  forget(conversation: number): void {
    this.#sequencer?.forget(conversation);
  }

  push(event: LogEvent): void {
    this.#sequencer?.push(event);
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
    this.#sequencer?.close();
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
