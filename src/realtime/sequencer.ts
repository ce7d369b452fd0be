/**
 * @module Per-connection ordering of conversation events (PROTOCOL.md, "Delivery order"): on one
 * connection the events of one conversation go out in seq order without gaps, catch-up first, then
 * live events, the connection's own replies (`sent`) counted. Live events reach a node from several
 * senders on several nodes, and a bus does not order them across publishers; an event that comes
 * early waits while the missing ones are read from the log (they are committed: the early one was
 * committed after them), and one that comes twice (live and in the catch-up) goes out once.
 */
import { eventSeq, type LogEvent } from "../chat/chat.ts";

type Item =
  | { kind: "event"; event: LogEvent }
  | {
    kind: "reply";
    conversation: number;
    direct: boolean;
    seq: number;
    write: () => void;
    done: () => void;
  }
  | { kind: "task"; run: () => Promise<void>; done: () => void; fail: (e: unknown) => void };

export interface SequencerOptions {
  /** Reads the events of `conversation` with after < seq <= upTo, in seq order. */
  fetch: (conversation: number, after: number, upTo: number) => Promise<LogEvent[]>;
  /** Writes one event to the connection. */
  emit: (event: LogEvent) => void;
  /** A gap could not be filled (the database is away): the connection should start over. */
  failed: (error: unknown) => void;
  /** The connection's own sends not yet answered (see `progress`); none by default. */
  pendingReplies?: () => number;
  /**
   * Where this connection's stream of a group conversation it has not seen since login starts
   * (the user's deliveredSeq there: a group joined after login starts at its lastSeq at the join).
   * Without it, such a stream starts at its first event.
   */
  streamStart?: (conversation: number) => Promise<number>;
}

/** Longest wait for the connection's own replies before a gap is filled from the log anyway. */
const OWN_REPLY_WAIT_MS = 10_000;

export class Sequencer {
  /** Per conversation, the last seq that went out. */
  #last = new Map<number, number>();
  #queue: Item[] = [];
  #busy = false;
  #holding = false;
  /**
   * A gap could not be filled: nothing more goes out (the connection is being closed), since a
   * later event would skip the missing ones. They come again at the next login.
   */
  #broken = false;
  /** The item the queue is working on. */
  #current: Item | null = null;
  /** Replies queued here, waiting for a gap before them to close. */
  #queuedReplies = 0;
  /** Resolved at the next `progress`; made only while something waits for it. */
  #progressed: PromiseWithResolvers<void> | null = null;

  constructor(private readonly o: SequencerOptions) {}

  /** The stream of `conversation` starts after `seq`: events at or before it are not sent. */
  start(conversation: number, seq: number): void {
    this.#last.set(conversation, seq);
  }

  /** The last seq sent in `conversation`, if any. */
  last(conversation: number): number | undefined {
    return this.#last.get(conversation);
  }

  /** Forgets one conversation (its user left it): a next event of it starts its stream afresh. */
  forget(conversation: number): void {
    this.#last.delete(conversation);
  }

  /**
   * The connection is closed: nothing more goes out, and every reply and task waiting here is let
   * go at once, so that closing never waits on a fill (a database that does not answer).
   */
  close(): void {
    this.#broken = true;
    const waiting = this.#current ? [this.#current, ...this.#queue] : this.#queue;
    this.#queue = [];
    this.#queuedReplies = 0;
    for (const item of waiting) if (item.kind !== "event") item.done();
    this.progress();
  }

  /** Forgets every conversation (a new login on the same connection). */
  reset(): void {
    this.#last.clear();
  }

  /**
   * Holds live events back (queued, in arrival order) until `release`: called before a connection
   * is listed for live pushes, so nothing overtakes the catch-up that follows.
   */
  hold(): void {
    this.#holding = true;
  }

  /** Runs `setup` (the catch-up) while live events are held, then lets them through. */
  async release(setup: () => Promise<void>): Promise<void> {
    try {
      await setup();
    } finally {
      this.#holding = false;
      this.#kick();
    }
  }

  /**
   * Sends `event` from the catch-up or a fill: it goes out unless it went out already. Call only
   * from `release`'s setup or a task, where nothing else is sending.
   */
  deliver(event: LogEvent): void {
    if (this.#broken) return;
    const last = this.#last.get(event.conversation);
    const seq = eventSeq(event);
    if (last !== undefined && seq <= last) return;
    this.#last.set(event.conversation, seq);
    this.o.emit(event);
  }

  /** A live event. The common case (next in its conversation, nothing queued) goes out at once. */
  push(event: LogEvent): void {
    if (
      !this.#holding && !this.#busy && this.#known(event.conversation, "user" in event.message.to)
    ) {
      this.#first(event.conversation, "user" in event.message.to, eventSeq(event));
      if (this.#ready(event.conversation, eventSeq(event))) return this.deliver(event);
    }
    this.#queue.push({ kind: "event", event });
    this.#kick();
  }

  /**
   * The connection's own event `seq` is answered by `write` (a `sent` reply), once every earlier
   * event of its conversation has gone out. Resolves once written.
   */
  reply(conversation: number, direct: boolean, seq: number, write: () => void): Promise<void> {
    // Also while the queue is busy: a reply next in its conversation has nothing before it to
    // wait for, and may be what the busy queue waits for (see #ownReplies).
    if (this.#broken) return Promise.resolve();
    if (!this.#holding && this.#known(conversation, direct)) {
      this.#first(conversation, direct, seq);
      if (this.#ready(conversation, seq)) {
        this.#advance(conversation, seq);
        write();
        this.progress();
        return Promise.resolve();
      }
    }
    this.#queuedReplies++;
    return new Promise((done) => {
      this.#queue.push({ kind: "reply", conversation, direct, seq, write, done });
      this.progress();
      this.#kick();
    });
  }

  /**
   * The connection answered one of its own sends (or failed it): a gap that its own replies were
   * to close may be closed now.
   */
  progress(): void {
    this.#progressed?.resolve();
    this.#progressed = null;
  }

  /** Runs `run` in turn with the events (a resync's fills): nothing else goes out meanwhile. */
  task(run: () => Promise<void>): Promise<void> {
    return new Promise((done, fail) => {
      this.#queue.push({ kind: "task", run, done, fail });
      this.#kick();
    });
  }

  /** Reads and sends what is missing of `conversation` up to `upTo`. */
  async fill(conversation: number, upTo: number): Promise<void> {
    let after = this.#last.get(conversation) ?? 0;
    while (after < upTo) {
      const events = await this.o.fetch(conversation, after, upTo);
      for (const e of events) this.deliver(e);
      if (events.length === 0) return;
      after = eventSeq(events[events.length - 1]);
    }
  }

  /** Where the last queued reply of `conversation` before `seq` stands in the queue, or -1. */
  #replyBefore(conversation: number, seq: number): number {
    return this.#queue.findLastIndex((i) =>
      i.kind === "reply" && i.conversation === conversation && i.seq < seq
    );
  }

  /**
   * A gap before event `seq` may hold the connection's own messages, committed but not yet
   * answered: a batch's pushes to others go out as it commits, before its senders' replies are
   * written. Those come as replies (`sent`), not as pushes, so the gap waits while the connection
   * has sends in flight, until it closes or a reply is queued here. Replies reach the queue one at
   * a time, in request order, and own messages of a conversation have seqs in request order: so a
   * queued reply of this conversation before `seq` is where the event goes next (the gap may hold
   * more own messages after it), and with any other reply queued the gap is someone else's and is
   * filled (waiting longer would wait on the queue itself).
   */
  async #ownReplies(conversation: number, seq: number): Promise<void> {
    const deadline = performance.now() + OWN_REPLY_WAIT_MS;
    while (
      (this.#last.get(conversation) ?? 0) < seq - 1 && this.#queuedReplies === 0 &&
      (this.o.pendingReplies?.() ?? 0) > 0
    ) {
      const left = deadline - performance.now();
      if (left <= 0) return;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        (this.#progressed ??= Promise.withResolvers<void>()).promise,
        new Promise<void>((resolve) => timer = setTimeout(resolve, left)),
      ]);
      clearTimeout(timer);
    }
  }

  /** Can go out without a fill: next in line, or at or before the last sent. */
  #ready(conversation: number, seq: number): boolean {
    return seq <= (this.#last.get(conversation) ?? 0) + 1;
  }

  /**
   * Whether `conversation`'s stream has a known start without asking: seen since login, or a
   * direct one (its log starts at 1). A group joined after login is asked about (`streamStart`):
   * its first event here need not be the first after the join, since events from other nodes
   * can come after later ones from this node.
   */
  #known(conversation: number, direct: boolean): boolean {
    return direct || this.#last.has(conversation) || !this.o.streamStart;
  }

  /**
   * A conversation this connection has not seen since login and whose start is known (#known): a
   * direct one began after the login (its log starts at 1); a group, without `streamStart`,
   * starts at this event.
   */
  #first(conversation: number, direct: boolean, seq: number): void {
    if (this.#last.has(conversation)) return;
    this.#last.set(conversation, direct ? 0 : seq - 1);
  }

  /**
   * A group joined after login starts where `streamStart` says; the event at hand goes out even
   * if another device of the user already acknowledged it.
   */
  async #start(conversation: number, seq: number): Promise<void> {
    const start = await this.o.streamStart!(conversation);
    if (!this.#last.has(conversation)) this.#last.set(conversation, Math.min(start, seq - 1));
  }

  /** A read of the log failed: nothing more goes out, and the connection is told to start over. */
  #fail(error: unknown): void {
    if (this.#broken) return;
    this.#broken = true;
    this.o.failed(error);
  }

  #advance(conversation: number, seq: number): void {
    if ((this.#last.get(conversation) ?? 0) < seq) this.#last.set(conversation, seq);
  }

  #kick(): void {
    if (!this.#busy && !this.#holding && this.#queue.length > 0) void this.#pump();
  }

  async #pump(): Promise<void> {
    this.#busy = true;
    try {
      while (this.#queue.length > 0 && !this.#holding) {
        const item = this.#current = this.#queue.shift()!;
        if (item.kind === "task") {
          await item.run().then(item.done, item.fail);
          continue;
        }
        const [conversation, direct, seq] = item.kind === "event"
          ? [item.event.conversation, "user" in item.event.message.to, eventSeq(item.event)]
          : [item.conversation, item.direct, item.seq];
        if (!this.#known(conversation, direct)) {
          try {
            await this.#start(conversation, seq);
          } catch (error) {
            this.#fail(error);
          }
        }
        this.#first(conversation, direct, seq);
        if (item.kind === "event" && (this.#last.get(conversation) ?? 0) < seq - 1) {
          // Replies of this connection queued for earlier seqs of the conversation go first:
          // they are its own events, and their gaps are filled up to them only. Events moved
          // behind the same reply keep their seq order.
          await this.#ownReplies(conversation, seq);
          const before = this.#replyBefore(conversation, seq);
          if (before >= 0) {
            const earlier = (i: Item) =>
              i.kind === "event" && i.event.conversation === conversation &&
              eventSeq(i.event) < seq;
            let at = before + 1;
            while (at < this.#queue.length && earlier(this.#queue[at])) at++;
            this.#queue.splice(at, 0, item);
            continue;
          }
        }
        const last = this.#last.get(conversation);
        if (last !== undefined && seq > last + 1) {
          try {
            await this.fill(conversation, seq - 1);
          } catch (error) {
            this.#fail(error);
          }
        }
        if (item.kind === "event") {
          this.deliver(item.event);
        } else {
          if (this.#queuedReplies > 0) this.#queuedReplies--;
          this.#advance(conversation, seq);
          if (!this.#broken) item.write();
          item.done();
          this.progress();
        }
      }
    } finally {
      this.#current = null;
      this.#busy = false;
      this.#kick();
    }
  }
}
