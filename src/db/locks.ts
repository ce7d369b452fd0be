/**
 * @module Advisory lock keys. PostgreSQL's two-key form (namespace, key) keeps Parley's locks apart
 * from any other application's on the same database.
 */

/** 'Prly' as a 32-bit integer: key 0 is the migration lock, 1 .. 2^31-1 are node locks. */
export const LOCK_NAMESPACE = 0x50726c79;

/** A namespace of its own for conversation locks (see storeMessages). */
export const CONVERSATION_NAMESPACE = LOCK_NAMESPACE + 1;

/** FNV-1a over UTF-8: stable across processes and versions. */
function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(text)) {
    h ^= byte;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** A node's lock key. A collision only makes a dead node look alive, which its lease then covers. */
export function nodeLockKey(nodeId: string): number {
  return (fnv1a(nodeId) % 0x7ffffffe) + 1;
}

/** A conversation's lock key. Collisions only make unrelated conversations wait on each other. */
export function conversationLockKey(conversation: string): number {
  return fnv1a(conversation) | 0;
}

/** The lock key of the direct conversation between two users, as storeMessages names it. */
export function directConversationLockKey(a: number, b: number): number {
  return conversationLockKey(`u:${Math.min(a, b)}:${Math.max(a, b)}`);
}
