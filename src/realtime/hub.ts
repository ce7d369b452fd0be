/**
 * @module The hub turns bus events into pushes to this node's sockets: new messages, presence
 * (with a grace period against flapping), friends, group members, typing and takeover kicks.
 */
import type { Chat } from "../chat/chat.ts";
import { conversationKey, TYPING_INTERVAL_MS } from "../chat/people.ts";
import type { Logger } from "../log.ts";
import type { Metrics } from "../metrics.ts";
import type { Bus, BusEvent, Delivery } from "./bus.ts";
import type { Notice, Registry } from "./registry.ts";
import { CLOSE } from "./socket.ts";

export interface HubOptions {
  chat: Chat;
  bus: Bus;
  registry: Registry;
  log: Logger;
  presenceGraceMs: number;
  metrics: Metrics;
  /** This node's id: messages it committed itself are delivered without the bus round trip. */
  nodeId: string;
}

export class Hub {
  readonly #o: HubOptions;
  /** Offline pushes waiting out the grace period, by user. */
  #pendingOffline = new Map<number, ReturnType<typeof setTimeout>>();
  #stopped = false;
  /** When the last typing notice pushed from this node was passed on, by `from|conversation`. */
  #typingPushed = new Map<string, { at: number; notice: string }>();
  #typingSweepAt = 10_000;

  constructor(options: HubOptions) {
    this.#o = options;
    options.bus.subscribe((event) => this.#handle(event));
    options.chat.onDelivery((items) => this.#deliverItems(items));
    options.bus.onResync(() => {
      options.metrics.busResyncs.inc();
      this.#run("resync", () => this.catchUp());
    });
  }

  #handle(event: BusEvent): void {
    if (this.#stopped) return;
    this.#o.metrics.busEvents.inc({ type: event.type });
    switch (event.type) {
      case "messages":
        if (event.origin !== this.#o.nodeId) this.#deliverItems(event.items);
        return;
      case "message.refs":
        if (event.origin === this.#o.nodeId) return;
        return this.#run(event.type, () => this.#deliver(event.ids, event.recipients));
      case "presence":
        return this.#presence(event.user, event.online);
      case "kick":
        for (const id of event.sessions) {
          this.#o.registry.bySession(id)?.close(CLOSE.replaced, "Replaced by a newer login");
        }
        return;
      case "friend":
        return this.#run(event.type, () => this.#friendAdded(event.user, event.friend));
      case "member":
        return this.#run(event.type, () => this.#memberJoined(event.group, event.user));
      case "unfriend":
        this.#notifyUser(event.user, { type: "friend.removed", user: event.friend }, event.session);
        this.#notifyUser(event.friend, { type: "friend.removed", user: event.user });
        return;
      case "member.left":
        return this.#run(
          event.type,
          () => this.#memberLeft(event.group, event.user, event.session, event.conversation),
        );
      case "typing":
        return this.#typing(event);
      case "read":
        return this.#read(event);
      case "change":
        return this.#run(event.type, () => this.#changed(event));
    }
  }

  /** Runs a handler for an event; a failure is logged, never thrown into the bus. */
  #run(kind: string, work: () => Promise<void>): void {
    work().catch((error) => this.#o.log.warn("hub.failed", { kind, error: String(error) }));
  }

  #deliverItems(items: Delivery[]): void {
    if (this.#o.registry.sessions === 0) return;
    for (const { message, conversation, recipients, session } of items) {
      let observed = false;
      const event = { conversation, message };
      for (const user of recipients) {
        for (const socket of this.#o.registry.byUser(user)) {
          if (socket.sessionId === session && session !== undefined) continue;
          if (!observed) {
            this.#o.metrics.sendPushSeconds.observe(
              Math.max(0, Date.now() - Date.parse(message.at)) / 1000,
            );
            observed = true;
          }
          socket.push(event);
        }
      }
    }
  }

  /** Messages known by id only: fetched, for the recipients on this node. */
  async #deliver(ids: number[], recipients: number[]): Promise<void> {
    const local = recipients.filter((r) => this.#o.registry.byUser(r).size > 0);
    if (local.length === 0) return;
    for (const event of await this.#o.chat.eventsById(ids)) {
      this.#o.metrics.sendPushSeconds.observe(
        Math.max(0, Date.now() - Date.parse(event.message.at)) / 1000,
      );
      for (const user of local) {
        for (const socket of this.#o.registry.byUser(user)) socket.push(event);
      }
    }
  }

  /** An edit or a deletion: to every participant's sockets here but the asking one. */
  async #changed(event: Extract<BusEvent, { type: "change" }>): Promise<void> {
    const sockets = event.recipients.flatMap((user) => [...this.#o.registry.byUser(user)])
      .filter((s) => event.session === undefined || s.sessionId !== event.session);
    if (sockets.length === 0) return;
    const pushed = event.message
      ? { conversation: event.conversation, message: event.message, change: event.change }
      : await this.#o.chat.changedById(event.conversation, event.id, event.change);
    if (!pushed) return;
    for (const socket of sockets) socket.push(pushed);
  }

  /** A user read a conversation: its other devices, and the other user of a direct one. */
  #read(event: Extract<BusEvent, { type: "read" }>): void {
    const { user, seq } = event;
    for (const socket of this.#o.registry.byUser(user)) {
      if (event.session !== null && socket.sessionId === event.session) continue;
      socket.notify({ type: "read", with: event.with, user, seq });
    }
    if ("user" in event.with && event.with.user !== user) {
      for (const socket of this.#o.registry.byUser(event.with.user)) {
        socket.notify({ type: "read", with: { user }, user, seq });
      }
    }
  }

  /**
   * Online is pushed at once. Offline waits `presenceGraceMs` and is dropped if the user is back by
   * then, so a user whose node restarts and who reconnects elsewhere within the grace shows no
   * flap to its friends: the online event that arrives meanwhile cancels both pushes.
   */
  #presence(user: number, online: boolean): void {
    const pending = this.#pendingOffline.get(user);
    const metrics = this.#o.metrics;
    if (online) {
      if (pending !== undefined) {
        clearTimeout(pending);
        this.#pendingOffline.delete(user);
        metrics.presenceHeld.dec();
        return;
      }
      this.#run("presence", () => this.#pushPresence(user, true));
      return;
    }
    if (pending !== undefined) return;
    metrics.presenceHeld.inc();
    this.#pendingOffline.set(
      user,
      setTimeout(() => {
        this.#pendingOffline.delete(user);
        metrics.presenceHeld.dec();
        this.#run("presence", async () => {
          if (!await this.#o.chat.isOnline(user)) await this.#pushPresence(user, false);
        });
      }, this.#o.presenceGraceMs),
    );
  }

  async #pushPresence(user: number, online: boolean): Promise<void> {
    if (this.#o.registry.sessions === 0) return;
    this.#o.metrics.presencePushed.inc({ online: String(online) });
    for (const contact of await this.#o.chat.contactsOf(user)) {
      for (const socket of this.#o.registry.byUser(contact)) {
        socket.notify({ type: "presence", user, online });
      }
    }
  }

  async #friendAdded(user: number, friend: number): Promise<void> {
    const sockets = this.#o.registry.byUser(friend);
    if (sockets.size === 0) return;
    const row = await this.#o.chat.friend(user);
    if (row) { for (const socket of sockets) socket.notify({ type: "friend.added", friend: row }); }
  }

  async #memberJoined(groupId: number, user: number): Promise<void> {
    const group = await this.#o.chat.group(groupId);
    const member = group?.members.find((m) => m.id === user);
    if (!group || !member) return;
    for (const m of group.members) {
      if (m.id === user) continue;
      for (const socket of this.#o.registry.byUser(m.id)) {
        socket.notify({ type: "group.member", group: groupId, member });
      }
    }
  }

  /** Pushes `notice` to every socket of `user` on this node but the one of session `except`. */
  #notifyUser(user: number, notice: Notice, except?: number): void {
    for (const socket of this.#o.registry.byUser(user)) {
      if (except === undefined || socket.sessionId !== except) socket.notify(notice);
    }
  }

  /** Tells the members that remain, and the leaver's other devices. */
  async #memberLeft(
    group: number,
    user: number,
    except: number | undefined,
    conversation: number | null,
  ): Promise<void> {
    const notice = { type: "group.member.left", group, user };
    if (conversation !== null) {
      for (const socket of this.#o.registry.byUser(user)) socket.forget(conversation);
    }
    this.#notifyUser(user, notice, except);
    if (this.#o.registry.sessions === 0) return;
    for (const member of await this.#o.chat.people.members(group)) {
      if (member !== user) this.#notifyUser(member, notice);
    }
  }

  /**
   * Pushes a typing notice to the recipients this node holds. The sending node passes on at most
   * one per interval; notices from two nodes (one user's devices on both, under
   * LOGIN_POLICY=multi) passed on within the interval of each other are dropped here, judged by
   * when each was passed on, so every receiving node makes the same choice.
   */
  #typing(event: Extract<BusEvent, { type: "typing" }>): void {
    const key = `${event.from}|${conversationKey(event.from, event.to)}`;
    const last = this.#typingPushed.get(key);
    // The parts of one notice (a large group's recipients, split) all go through.
    if (
      last !== undefined && last.notice !== event.notice &&
      Math.abs(event.at - last.at) < TYPING_INTERVAL_MS
    ) {
      return;
    }
    this.#typingPushed.set(key, { at: event.at, notice: event.notice });
    if (this.#typingPushed.size > this.#typingSweepAt) {
      for (const [k, passed] of this.#typingPushed) {
        if (event.at - passed.at >= TYPING_INTERVAL_MS) this.#typingPushed.delete(k);
      }
      this.#typingSweepAt = Math.max(10_000, 2 * this.#typingPushed.size);
    }
    const notice = {
      type: "typing",
      from: event.from,
      with: "group" in event.to ? { group: event.to.group } : { user: event.from },
    };
    for (const user of event.recipients) this.#notifyUser(user, notice);
  }

  /** After the bus was away: send every connection on this node what it missed. */
  async catchUp(): Promise<void> {
    const sockets = this.#o.registry.all().filter((s) => s.userId !== null);
    for (const socket of sockets) await socket.resync();
  }

  stop(): void {
    this.#stopped = true;
    for (const timer of this.#pendingOffline.values()) clearTimeout(timer);
    this.#o.metrics.presenceHeld.dec(this.#pendingOffline.size);
    this.#pendingOffline.clear();
  }
}
