/**
 * @module The course protocol's transport: a TCP listener (LEGACY_TCP_PORT) and, per connection, a
 * `CourseConnection` that splits the stream into requests, runs them in order against the chat
 * domain, and writes replies and messages back as the course client expects them. It is a `Peer`
 * like a WebSocket: the hub pushes through it, the drain and the rejoin close it, and its login is
 * a session (transport "tcp") under the same presence rules.
 *
 * Requests of one connection pipeline as WebSocket sends do: a chat message is handed to the
 * outbox (group commit) in arrival order and the next request starts at once, so a client with
 * several messages in flight gets several into one commit; other requests wait for the ones
 * before them to finish.
 *
 * Server to client, the course client parses each `recv` (at most 1024 bytes) as one JSON object, so
 * every object is its own write, with TCP_NODELAY so that Nagle's algorithm does not merge them.
 * Where the course client is sure to be reading late, writes are spaced: `ackPauseMs` after the
 * login ack (the course client handles the ack on one thread and only then starts reading on
 * another), and `writeGapMs` between the waiting messages replayed after a login, a burst paced at
 * about 1000 / writeGapMs objects a second, far above what a person reads. Live messages go out as
 * the course server sent them: at once, each its own write, except that those queued while a
 * write is under way leave together in the next one, as muduo's output buffer does.
 */
import { type Chat, eventSeq, type LogEvent, type Range } from "../chat/chat.ts";
import { toChatError } from "../chat/errors.ts";
import type { Logger } from "../log.ts";
import type { Metrics } from "../metrics.ts";
import { TokenBucket } from "../realtime/rate_limit.ts";
import type { Notice, Peer, Registry } from "../realtime/registry.ts";
import {
  chatObject,
  type CourseRequest,
  decodeRequest,
  ERRMSG,
  ERRNO,
  loginAck,
  loginError,
  MSGID,
  registerAck,
  registerError,
} from "./course.ts";
import { type Piece, Splitter } from "./framing.ts";
import { Sequencer } from "../realtime/sequencer.ts";
import { delay } from "../time.ts";

/** Pause after the login ack, so that the ack and what follows never land in one `recv`. */
export const ACK_PAUSE_MS = 100;
/** Least time between two writes to one connection. */
export const WRITE_GAP_MS = 20;
/** Writes a connection may have queued; past this the client reads too slowly and is closed. */
const MAX_PENDING_WRITES = 2000;
/** Events read per query when catching up. */
const CATCH_UP_PAGE = 500;
const READ_BUFFER_BYTES = 16 * 1024;

const encoder = new TextEncoder();

export interface CourseOptions {
  chat: Chat;
  registry: Registry;
  log: Logger;
  /** Longest request object accepted (MAX_FRAME_BYTES). */
  maxObjectBytes: number;
  rateLimitPerSec: number;
  rateLimitBurst: number;
  metrics?: Metrics;
  ackPauseMs?: number;
  writeGapMs?: number;
}

export interface CourseServerOptions extends CourseOptions {
  hostname: string;
  port: number;
  /** Connections (of every transport) past which new ones are closed at once (MAX_CONNECTIONS). */
  maxConnections: number;
  /** True while the node drains: a new connection is closed at once. */
  draining: () => boolean;
}

let nextConnection = 1;

interface Outgoing {
  bytes: Uint8Array;
  pauseAfterMs: number;
  /** The login it was queued under: written only while that login lasts. */
  generation: number;
  resolve: (written: boolean) => void;
}

function joined(batch: readonly Outgoing[]): Uint8Array {
  let length = 0;
  for (const o of batch) length += o.bytes.length;
  const out = new Uint8Array(length);
  let at = 0;
  for (const o of batch) {
    out.set(o.bytes, at);
    at += o.bytes.length;
  }
  return out;
}

/** One course client's TCP connection. Nothing it receives can make it throw. */
export class CourseConnection implements Peer {
  userId: number | null = null;
  sessionId: number | null = null;
  readonly ended: Promise<void>;
  #resolveEnded!: () => void;
  readonly #conn: Deno.TcpConn;
  readonly #o: CourseOptions;
  /** The client's address, for the login and registration throttles. */
  readonly #address: string;
  readonly #log: Logger;
  readonly #splitter: Splitter;
  readonly #bucket: TokenBucket;
  readonly #ackPauseMs: number;
  readonly #writeGapMs: number;
  /**
   * When the next request may start: after the one before has finished, or, after a chat
   * message, once that message is in the outbox's queue.
   */
  #requests: Promise<void> = Promise.resolve();
  /** Every request received and not yet finished, so that the end can wait for them. */
  #running = new Set<Promise<void>>();
  /** Objects to write, in order; `#pump` writes them. */
  #out: Outgoing[] = [];
  #pumping = false;
  /** Resolves when the queue last became empty (the replay waits on it). */
  #drained: Promise<void> = Promise.resolve();
  #resolveDrained: () => void = () => {};
  /** `performance.now()` before which the next write waits. */
  #notBefore = 0;
  /** Counts logins and logouts: a write queued under an earlier one is not written. */
  #generation = 0;
  /** The login ack is queued: pushes may follow it. Before that they are left to the replay. */
  #ready = false;
  /** The session this connection is listed under in the registry, kept for `unbind`. */
  #bound: { user: number; session: number } | null = null;
  /** Orders and deduplicates what is written, per conversation (see Sequencer). */
  #sequencer: Sequencer;
  /** The login replay is being written: paced, unlike live messages. */
  #replaying = false;
  #closing = false;
  #connClosed = false;
  #finished = false;
  #dropped = 0;

  constructor(conn: Deno.TcpConn, options: CourseOptions) {
    this.#conn = conn;
    this.#o = options;
    const remote = conn.remoteAddr;
    this.#address = remote.hostname;
    this.#log = options.log.with({
      transport: "tcp",
      conn: nextConnection++,
      remote: `${remote.hostname}:${remote.port}`,
    });
    this.#splitter = new Splitter({ maxObjectBytes: options.maxObjectBytes });
    this.#bucket = new TokenBucket(options.rateLimitPerSec, options.rateLimitBurst);
    this.#ackPauseMs = options.ackPauseMs ?? ACK_PAUSE_MS;
    this.#writeGapMs = options.writeGapMs ?? WRITE_GAP_MS;
    this.ended = new Promise((resolve) => this.#resolveEnded = resolve);
    this.#sequencer = new Sequencer({
      // Asked only while logged in: the sequencer sees events only then.
      streamStart: (conversation) => options.chat.streamStart(this.userId!, conversation),
      fetch: (conversation, after, upTo) =>
        options.chat.events([{ conversation, after, upTo }], CATCH_UP_PAGE),
      emit: (event) => this.#deliver(event, this.#replaying ? this.#writeGapMs : 0),
      failed: (error) => {
        this.#log.warn("legacy.fill_failed", { error: String(error) });
        this.close(1011, "Could not read the conversation log");
      },
    });
  }

  /** Reads until either side closes, then ends the session. Never throws. */
  async serve(): Promise<void> {
    this.#o.registry.add(this);
    this.#log.debug("legacy.connected");
    try {
      this.#conn.setNoDelay(true);
      this.#conn.setKeepAlive(true);
    } catch (error) {
      this.#log.debug("legacy.socket_option_failed", { error: String(error) });
    }
    const buffer = new Uint8Array(READ_BUFFER_BYTES);
    try {
      while (!this.#closing) {
        const n = await this.#conn.read(buffer);
        if (n === null) {
          for (const piece of this.#splitter.end()) this.#receivedSafely(piece);
          break;
        }
        for (const piece of this.#splitter.push(buffer.subarray(0, n))) this.#receivedSafely(piece);
      }
    } catch (error) {
      // Reset by the peer, or interrupted by our own close.
      if (!this.#closing) this.#log.debug("legacy.read_failed", { error: String(error) });
    }
    await this.#finish();
  }

  #receivedSafely(piece: Piece): void {
    try {
      this.#received(piece);
    } catch (error) {
      this.#log.error("legacy.internal", { error, user: this.userId ?? undefined });
    }
  }

  /** One piece of the stream: rate-limited, decoded, and queued to run after the ones before. */
  #received(piece: Piece): void {
    const wait = this.#bucket.take();
    if (wait > 0) {
      // Logged once per run of drops, so that a flood does not become a flood of log lines.
      if (this.#dropped++ === 0) {
        this.#log.warn("legacy.rate_limited", { retryInMs: wait, user: this.userId ?? undefined });
      }
      return;
    }
    if (this.#dropped > 0) {
      this.#log.info("legacy.rate_limit_ended", { dropped: this.#dropped });
      this.#dropped = 0;
    }
    if (piece.kind === "malformed") {
      this.#log.info("legacy.malformed", { reason: piece.reason, bytes: piece.bytes });
      return;
    }
    const decoded = decodeRequest(piece.value);
    if (!decoded.ok) {
      // Field names only: a bad login or registration may still carry a password.
      this.#log.info("legacy.malformed", {
        reason: decoded.reason,
        msgid: decoded.msgid ?? undefined,
        bytes: piece.bytes,
      });
      // The course client waits for an answer to these two; everything else has none.
      if (decoded.msgid === MSGID.login) {
        this.#enqueueAfterRequests(loginError(ERRNO.badCredentials, ERRMSG.badCredentials));
      } else if (decoded.msgid === MSGID.register) {
        this.#enqueueAfterRequests(registerError(`Invalid request: ${decoded.reason}`));
      }
      return;
    }
    const request = decoded.request;
    const chat = request.msgid === MSGID.oneChat || request.msgid === MSGID.groupChat;
    let submitted!: () => void;
    const afterSubmit = chat ? new Promise<void>((resolve) => submitted = resolve) : null;
    const outcome = this.#requests.then(() => {
      // `#run` hands a chat message to the outbox before its first await: the message's place
      // in the commit order is taken once the call returns.
      const running = this.#run(request);
      submitted?.();
      return running;
    });
    this.#track(outcome);
    this.#requests = afterSubmit ?? outcome;
  }

  #track(work: Promise<void>): void {
    this.#running.add(work);
    void work.finally(() => this.#running.delete(work));
  }

  #enqueueAfterRequests(frame: Record<string, unknown>): void {
    this.#requests = this.#requests.then(() => void this.#enqueue(frame));
  }

  async #run(request: CourseRequest): Promise<void> {
    if (this.#closing) return;
    try {
      await this.#dispatch(request);
    } catch (error) {
      const e = toChatError(error);
      if (e.code === "unavailable") this.#o.metrics?.dbErrors.inc();
      if (e.code === "internal") {
        this.#log.error("legacy.internal", {
          error,
          msgid: request.msgid,
          user: this.userId ?? undefined,
        });
      } else {
        this.#log.info("legacy.request_failed", {
          code: e.code,
          message: e.message,
          msgid: request.msgid,
          user: this.userId ?? undefined,
        });
      }
    }
  }

  async #dispatch(request: CourseRequest): Promise<void> {
    if (request.msgid === MSGID.register) return await this.#register(request);
    if (request.msgid === MSGID.login) return await this.#login(request);
    const me = this.userId;
    if (me === null) {
      this.#log.info("legacy.unauthenticated", { msgid: request.msgid });
      return;
    }
    if (request.id !== undefined && request.id !== me) {
      // The course server trusted this field; Parley acts as the logged-in user whatever it says.
      this.#log.warn("legacy.id_mismatch", {
        msgid: request.msgid,
        user: me,
        claimed: typeof request.id === "number" ? request.id : String(request.id).slice(0, 32),
      });
    }
    const chat = this.#o.chat;
    switch (request.msgid) {
      case MSGID.logout:
        return await this.#logout("logout");
      case MSGID.oneChat:
        await chat.send(me, { user: request.toid }, request.msg);
        this.#o.metrics?.messagesSent.inc();
        return;
      case MSGID.groupChat:
        await chat.send(me, { group: request.groupid }, request.msg);
        this.#o.metrics?.messagesSent.inc();
        return;
      case MSGID.addFriend:
        await chat.addFriend(me, request.friendid);
        return;
      case MSGID.createGroup:
        await chat.createGroup(me, request.groupname, request.groupdesc ?? "");
        return;
      case MSGID.joinGroup:
        await chat.joinGroup(me, request.groupid);
        return;
    }
  }

  async #register(request: Extract<CourseRequest, { msgid: 4 }>): Promise<void> {
    try {
      const user = await this.#o.chat.register(request.name, request.password, this.#address);
      this.#log.info("account.registered", { user: user.id });
      void this.#enqueue(registerAck(user.id));
    } catch (error) {
      const e = toChatError(error);
      void this.#enqueue(registerError(e.message));
      throw error;
    }
  }

  /**
   * Opens a session, queues the ack, then the waiting messages, each its own write. A login on a
   * connection that is already logged in ends that session first, as the course client, which only
   * logs in from its logged-out menu, means it.
   */
  async #login(request: Extract<CourseRequest, { msgid: 1 }>): Promise<void> {
    if (this.userId !== null) await this.#logout("login again");
    const chat = this.#o.chat;
    let opened: Awaited<ReturnType<Chat["login"]>>;
    try {
      opened = await chat.login(
        { id: request.id, password: request.password },
        "tcp",
        this.#address,
      );
    } catch (error) {
      const e = toChatError(error);
      this.#o.metrics?.logins.inc({ result: e.code });
      this.#log.info("legacy.login_failed", { code: e.code, claimed: request.id });
      void this.#enqueue(
        e.code === "bad_credentials"
          ? loginError(ERRNO.badCredentials, ERRMSG.badCredentials)
          : e.code === "already_online"
          ? loginError(ERRNO.alreadyOnline, ERRMSG.alreadyOnline)
          : loginError(ERRNO.unavailable, e.message),
      );
      if (e.code === "internal") throw error;
      return;
    }
    const { user, sessionId } = opened;
    this.#o.metrics?.logins.inc({ result: "ok" });
    if (this.#closing) {
      // The connection went away while the login ran: undo the session it would have held.
      await chat.endSession(sessionId);
      return;
    }
    this.userId = user.id;
    this.sessionId = sessionId;
    this.#generation++;
    // Listed before the catch-up is read, with live events held until it is written: a message
    // committed meanwhile comes both ways, and the sequencer writes it once (the course client
    // cannot drop duplicates itself), in order.
    this.#sequencer.reset();
    this.#sequencer.hold();
    this.#bound = { user: user.id, session: sessionId };
    this.#o.registry.bind(this);
    this.#log.info("session.opened", { user: user.id, session: sessionId });
    let overview: Awaited<ReturnType<Chat["overview"]>>;
    let catchUp: Awaited<ReturnType<Chat["catchUp"]>>;
    try {
      overview = await chat.overview(user.id);
      catchUp = await chat.catchUp(user.id, null, overview.groups.map((g) => g.id));
    } catch (error) {
      await this.#sequencer.release(() => Promise.resolve());
      await this.#logout("login failed");
      void this.#enqueue(loginError(ERRNO.unavailable, toChatError(error).message));
      throw error;
    }
    void this.#enqueue(loginAck(user, overview.friends, overview.groups), this.#ackPauseMs);
    this.#ready = true;
    await this.#sequencer.release(async () => {
      for (const [conversation, seq] of catchUp.starts) this.#sequencer.start(conversation, seq);
      await this.#replay(catchUp.ranges);
    });
  }

  /**
   * Writes what no device of this user has, oldest first across all its conversations, as the
   * course did, a page at a time as the writes complete.
   */
  async #replay(ranges: Range[]): Promise<void> {
    const generation = this.#generation;
    let left = ranges.map((r) => ({ ...r }));
    while (left.length > 0 && !this.#closing && this.#generation === generation) {
      const page = await this.#o.chat.events(left, CATCH_UP_PAGE, true);
      if (this.#generation !== generation) return;
      this.#replaying = true;
      try {
        for (const event of page) this.#sequencer.deliver(event);
      } finally {
        this.#replaying = false;
      }
      if (page.length < CATCH_UP_PAGE) return;
      const reached = new Map(page.map((e) => [e.conversation, eventSeq(e)]));
      left = left.map((r) => ({ ...r, after: reached.get(r.conversation) ?? r.after }))
        .filter((r) => r.after < r.upTo);
      await this.#drained;
    }
  }

  /** Ends the session; the connection stays open for another login. */
  async #logout(why: string): Promise<void> {
    const [user, session] = [this.userId, this.sessionId];
    this.#unbind();
    this.userId = null;
    this.sessionId = null;
    this.#ready = false;
    this.#generation++;
    this.#sequencer.reset();
    if (session !== null) {
      await this.#o.chat.endSession(session);
      this.#log.info("session.closed", { user: user ?? undefined, session, why });
    }
  }

  #unbind(): void {
    if (this.#bound) this.#o.registry.unbind(this);
    this.#bound = null;
  }

  /** After the bus was away: writes what this connection missed, in order. */
  async resync(): Promise<void> {
    const user = this.userId;
    if (user === null || !this.#ready) return;
    await this.#sequencer.task(async () => {
      const catchUp = await this.#o.chat.catchUp(user, null, []);
      for (const [conversation, seq] of catchUp.starts) {
        if (this.#sequencer.last(conversation) === undefined) {
          this.#sequencer.start(conversation, seq);
        }
      }
      for (const [conversation, last] of catchUp.lasts) {
        await this.#sequencer.fill(conversation, last);
      }
    });
  }

  forget(conversation: number): void {
    this.#sequencer.forget(conversation);
  }

  push(event: LogEvent): void {
    if (this.#ready && this.userId !== null) this.#sequencer.push(event);
  }

  /** Presence, friend and member pushes have no course form: the course client never gets them. */
  notify(_notice: Notice): void {}

  /**
   * Queues one event as one write and, once written, counts it as delivered: the course client
   * has no way to acknowledge. The user's own messages (from its other devices) have no course
   * form and are skipped.
   */
  #deliver(event: LogEvent, pauseAfterMs: number): void {
    const user = this.userId;
    if (user === null || event.message.from.id === user) return;
    if (event.change) {
      // Edits and deletions have no course form either: what the course client has is that
      // message as it was; the event counts as delivered all the same, so it never waits.
      this.#o.chat.delivered(user, event).catch(() => {});
      return;
    }
    void this.#enqueue(chatObject(event.message), pauseAfterMs).then((written) => {
      if (!written) return;
      this.#o.metrics?.messagesDelivered.inc();
      this.#o.chat.delivered(user, event).catch((error) =>
        this.#log.warn("legacy.ack_failed", {
          error: String(error),
          message: event.message.id,
          user,
        })
      );
    });
  }

  /**
   * Queues one object. Resolves true once it was written, false when it was not (the connection
   * closed, or a login or logout came between, so it belongs to another session). The next write
   * waits `pauseAfterMs` after this one; an unpaced object may share its write with the unpaced
   * objects queued behind it.
   */
  #enqueue(frame: Record<string, unknown>, pauseAfterMs = this.#writeGapMs): Promise<boolean> {
    if (this.#closing) return Promise.resolve(false);
    if (this.#out.length >= MAX_PENDING_WRITES) {
      // Its unwritten messages stay waiting for its next login.
      this.#log.warn("legacy.too_slow", { pending: this.#out.length });
      this.close(1008, "Reading too slowly");
      return Promise.resolve(false);
    }
    return new Promise((resolve) => {
      this.#out.push({
        bytes: encoder.encode(JSON.stringify(frame)),
        pauseAfterMs,
        generation: this.#generation,
        resolve,
      });
      if (!this.#pumping) {
        this.#pumping = true;
        this.#drained = new Promise((done) => this.#resolveDrained = done);
        void this.#pump();
      }
    });
  }

  /** Writes what is queued, in order, until the queue is empty. Never throws. */
  async #pump(): Promise<void> {
    try {
      while (this.#out.length > 0) {
        const wait = this.#notBefore - performance.now();
        if (wait > 0) await delay(wait);
        // An unpaced head takes every unpaced object behind it into the same write.
        let n = 1;
        if (this.#out[0].pauseAfterMs === 0) {
          while (n < this.#out.length && this.#out[n].pauseAfterMs === 0) n++;
        }
        const batch = this.#out.splice(0, n).filter((o) => {
          if (!this.#closing && o.generation === this.#generation) return true;
          o.resolve(false);
          return false;
        });
        if (batch.length === 0) continue;
        const ok = await this.#write(batch.length === 1 ? batch[0].bytes : joined(batch));
        const pause = batch[batch.length - 1].pauseAfterMs;
        this.#notBefore = pause > 0 ? performance.now() + pause : 0;
        for (const o of batch) o.resolve(ok);
        if (!ok) {
          for (const o of this.#out.splice(0)) o.resolve(false);
        }
      }
    } finally {
      this.#pumping = false;
      this.#resolveDrained();
    }
  }

  async #write(bytes: Uint8Array): Promise<boolean> {
    try {
      for (let done = 0; done < bytes.length;) {
        done += await this.#conn.write(bytes.subarray(done));
      }
      return true;
    } catch (error) {
      if (!this.#closing) this.#log.debug("legacy.write_failed", { error: String(error) });
      this.close(1011, "Write failed");
      return false;
    }
  }

  /** TCP has no close codes: the connection is simply closed; `ended` resolves once it is done. */
  close(code: number, reason: string): void {
    if (this.#closing) return;
    this.#closing = true;
    this.#log.debug("legacy.closing", { code, reason });
    this.#closeConn();
  }

  #closeConn(): void {
    if (this.#connClosed) return;
    this.#connClosed = true;
    try {
      this.#conn.close();
    } catch (error) {
      this.#log.debug("legacy.close_failed", { error: String(error) });
    }
  }

  /** Either side closed: unlist, let a request in flight finish, end the session. Runs once. */
  async #finish(): Promise<void> {
    if (this.#finished) return;
    this.#finished = true;
    this.#closing = true;
    this.#sequencer.close();
    this.#closeConn();
    this.#unbind();
    this.#o.registry.remove(this);
    try {
      await this.#requests;
      await Promise.all(this.#running);
      // Null when the drain or the rejoin ends the node's sessions itself.
      const session = this.sessionId;
      if (session !== null) {
        this.sessionId = null;
        await this.#o.chat.endSession(session);
        this.#log.info("session.closed", { user: this.userId ?? undefined, session });
      }
    } catch (error) {
      // The drain or the reaper ends sessions left behind; nothing more can be done here.
      this.#log.warn("session.close_failed", { error: String(error) });
    } finally {
      this.#log.debug("legacy.disconnected");
      this.#resolveEnded();
    }
  }
}

/** The listener. `stop` closes it and every connection it still has. */
export class CourseServer {
  readonly #listener: Deno.TcpListener;
  readonly #o: CourseServerOptions;
  readonly #connections = new Set<CourseConnection>();
  readonly #accepting: Promise<void>;
  #stopped = false;

  private constructor(listener: Deno.TcpListener, options: CourseServerOptions) {
    this.#listener = listener;
    this.#o = options;
    this.#accepting = this.#accept();
  }

  static listen(options: CourseServerOptions): CourseServer {
    const listener = Deno.listen({
      hostname: options.hostname,
      port: options.port,
      transport: "tcp",
    });
    return new CourseServer(listener, options);
  }

  get addr(): Deno.NetAddr {
    return this.#listener.addr;
  }

  async #accept(): Promise<void> {
    const o = this.#o;
    while (!this.#stopped) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (this.#stopped || error instanceof Deno.errors.BadResource) return;
        // Out of file descriptors and the like: wait a little rather than spin.
        o.log.warn("legacy.accept_failed", { error: String(error) });
        await delay(100);
        continue;
      }
      if (this.#stopped || o.draining() || o.registry.size >= o.maxConnections) {
        o.log.info("legacy.refused", {
          reason: this.#stopped || o.draining() ? "draining" : "too many connections",
        });
        try {
          conn.close();
        } catch {
          // Already closed.
        }
        continue;
      }
      const connection = new CourseConnection(conn, o);
      this.#connections.add(connection);
      connection.serve()
        .catch((error) => o.log.error("legacy.internal", { error }))
        .finally(() => this.#connections.delete(connection));
    }
  }

  /** Stops accepting, closes what is still open and waits until each has ended its session. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    try {
      this.#listener.close();
    } catch {
      // Already closed.
    }
    await this.#accepting;
    const open = [...this.#connections];
    for (const c of open) c.close(1001, "This node is shutting down");
    await Promise.all(open.map((c) => c.ended));
  }
}
