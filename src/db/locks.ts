/**
 * @module Advisory lock keys. PostgreSQL's two-key form (namespace, key) keeps Parley's locks apart
 * from any other application's on the same database.
 */

/** 'Prly' as a 32-bit integer. */
export const LOCK_NAMESPACE = 0x50726c79;

/** Key 0 in the namespace is the migration lock; node keys are 2 .. 2^31-1. */

/** Held while a batch of messages draws its ids and commits, so that ids follow commit order. */
export const MESSAGE_ORDER_KEY = 1;
export function nodeLockKey(nodeId: string): number {
  // FNV-1a: stable across processes and versions. A collision only makes a dead node look alive,
  // which its lease then covers.
  let h = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(nodeId)) {
    h ^= byte;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return (h % 0x7ffffffd) + 2;
}
