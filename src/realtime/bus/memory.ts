/**
 * @module The in-process bus: one node, so every event is delivered to its own subscribers, on a
 * later task so that publishing never runs a subscriber inside the publisher's call.
 */
import type { Bus, BusEvent, BusHandler, BusReceived, BusState } from "../bus.ts";

export class MemoryBus implements Bus {
  #handlers: BusHandler[] = [];
  #closed = false;

  constructor(private readonly received: BusReceived = () => {}) {}

  get state(): BusState {
    return this.#closed ? "closed" : "connected";
  }

  publish(...events: BusEvent[]): Promise<void> {
    if (this.#closed) return Promise.resolve();
    queueMicrotask(() => {
      for (const event of events) {
        this.received(event.type);
        for (const handler of this.#handlers) handler(event);
      }
    });
    return Promise.resolve();
  }

  subscribe(handler: BusHandler): void {
    this.#handlers.push(handler);
  }

  onResync(): void {
    // Never disconnected, never behind.
  }

  close(): Promise<void> {
    this.#closed = true;
    return Promise.resolve();
  }
}
