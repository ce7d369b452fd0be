/**
 * @module The cursor batch on a real database: acks wait out a window to be written together,
 * unless a request waits for them, and then they go at once. Beside it, the send batch: both are
 * written again when PostgreSQL ends them to break a deadlock.
 */
import { assertEquals } from "./support/assert.ts";
import { eventually } from "./support/client.ts";
import { createTestDatabase, sqlClient, withSql } from "./support/context.ts";
import type { Sql } from "../src/db/connect.ts";
import { CONVERSATION_NAMESPACE, directConversationLockKey } from "../src/db/locks.ts";
import { migrate } from "../src/db/migrate.ts";
import { type NewMessage, storeMessages } from "../src/db/queries/chat.ts";
import { CursorBatcher } from "../src/chat/acks.ts";
import { Outbox } from "../src/chat/outbox.ts";
import { createLogger } from "../src/log.ts";

/** Longer than the test: a move written before it ends was hurried, not timed out. */
const FOREVER_MS = 10 * 60_000;

Deno.test("a hurried cursor batch is written at once; without a hurry it waits out its window", async () => {
  const db = await createTestDatabase("cursors");
  try {
    await withSql(db.url, async (sql) => {
      await migrate(sql);
      const [ann, ben] = await sql<{ id: number }[]>`
        insert into users (name, password_hash) values ('ann', 'x'), ('ben', 'x') returning id`;
      await storeMessages(sql, [
        { senderId: ann.id, to: { user: ben.id }, text: "one", clientId: null },
        { senderId: ann.id, to: { user: ben.id }, text: "two", clientId: null },
      ]);
      const delivered = async () => {
        const [row] = await sql<{ seq: number }[]>`
          select delivered_seq as seq from user_cursors where user_id = ${ben.id}`;
        return row?.seq ?? 0;
      };
      const ack = (seq: number) => ({
        kind: "ack" as const,
        user: ben.id,
        device: null,
        target: { user: ann.id },
        seq,
      });

      const batcher = new CursorBatcher(sql, FOREVER_MS);
      // Nothing queued: a hurry now does not carry over to the next move.
      batcher.hurry();
      let written = false;
      const first = batcher.move(ack(1)).then(() => written = true);
      // A round trip of the same pool later, the window still holds the move.
      await sql`select 1`;
      assertEquals([written, await delivered()], [false, 0], "held for its window");

      batcher.hurry();
      await eventually(() => written, 10_000, "the hurried move");
      await first;
      assertEquals(await delivered(), 1);

      // The next move waits for its window again, until hurried in turn.
      const second = batcher.move(ack(2));
      batcher.hurry();
      await eventually(async () => await delivered() === 2, 10_000, "the second move");
      await second;
    });
  } finally {
    await db.drop();
  }
});

/** Some backend of this database waits for a lock. */
async function waitingForLock(sql: Sql): Promise<boolean> {
  const [row] = await sql<{ n: number }[]>`
    select count(*)::int as n from pg_stat_activity
     where datname = current_database() and wait_event_type = 'Lock'`;
  return row.n > 0;
}

Deno.test("batches of acks and of sends that PostgreSQL ends to break a deadlock are written again", async () => {
  const db = await createTestDatabase("deadlock");
  try {
    await withSql(db.url, async (sql) => {
      await migrate(sql);
      const [ann, ben, cat] = await sql<{ id: number }[]>`
        insert into users (name, password_hash) values ('ann', 'x'), ('ben', 'x'), ('cat', 'x')
        returning id`;
      const message = (from: number, to: number): NewMessage => ({
        senderId: from,
        to: { user: to },
        text: "hi",
        clientId: null,
      });
      // ben and cat write to ann, ann answers each: every one of them has a cursor row.
      await storeMessages(sql, [
        message(ben.id, ann.id),
        message(cat.id, ann.id),
        message(ann.id, ben.id),
        message(ann.id, cat.id),
      ]);
      const cursor = async (user: number, other: number) => {
        const [row] = await sql<{ delivered: number; read: number }[]>`
          select uc.delivered_seq as delivered, uc.read_seq as read
            from user_cursors uc join conversations c on c.id = uc.conversation_id
           where uc.user_id = ${user}
             and c.user_a = ${Math.min(user, other)} and c.user_b = ${Math.max(user, other)}`;
        return row;
      };
      const ack = (user: number, other: number) => ({
        kind: "ack" as const,
        user,
        device: null,
        target: { user: other },
        seq: 2,
      });

      // The batches and the transaction in their way each have a client of their own: `sql`
      // watches.
      const app = sqlClient(db.url);
      const blocker = sqlClient(db.url);
      try {
        // Cursors are locked in ascending order whatever the order of the acks: waiting for ben's
        // (the lower), the batch holds none of the others, so cat's is free.
        const ordered = new CursorBatcher(app, FOREVER_MS);
        let first: Promise<unknown> = Promise.resolve();
        await blocker.begin(async (other) => {
          await other`select 1 from user_cursors where user_id = ${ben.id} for update`;
          first = Promise.all([
            ordered.move({ ...ack(cat.id, ann.id), seq: 1 }),
            ordered.move({ ...ack(ben.id, ann.id), seq: 1 }),
          ]);
          ordered.hurry();
          await eventually(
            () => waitingForLock(sql),
            10_000,
            "the ack batch to wait for ben's row",
          );
          const free = await sql.begin((tx) =>
            tx`select 1 from user_cursors where user_id = ${cat.id} for update nowait`
          );
          assertEquals(free.length, 1, "cat's cursor is not locked by the waiting batch");
        });
        await first;

        const lines: string[] = [];
        const log = createLogger("info", {}, (line) => lines.push(line));
        const retried = () =>
          lines.map((l) => JSON.parse(l)).filter((l) => l.event === "db.deadlock_retried")
            .map((l) => l.batch);

        // The ack batch locks ben's cursor, then waits for cat's, which another transaction holds;
        // that one then asks for ben's. PostgreSQL ends the batch, which started waiting first.
        const batcher = new CursorBatcher(app, FOREVER_MS, log);
        let acked: Promise<unknown> = Promise.resolve();
        await blocker.begin(async (other) => {
          await other`select 1 from user_cursors where user_id = ${cat.id} for update`;
          acked = Promise.all([
            batcher.move(ack(ben.id, ann.id)),
            batcher.move(ack(cat.id, ann.id)),
          ]);
          batcher.hurry();
          await eventually(
            () => waitingForLock(sql),
            10_000,
            "the ack batch to wait for cat's row",
          );
          await other`select 1 from user_cursors where user_id = ${ben.id} for update`;
        });
        await acked;
        assertEquals([await cursor(ben.id, ann.id), await cursor(cat.id, ann.id)], [
          { delivered: 2, read: 1 },
          { delivered: 2, read: 1 },
        ]);

        assertEquals(retried(), ["cursors"], "the retry is logged");

        // The send batch holds the conversation's lock and waits for ann's cursor, which another
        // transaction holds; that one then asks for the conversation's lock.
        const outbox = new Outbox({ sql: app, log }, () => {});
        let sent: ReturnType<Outbox["store"]> | undefined;
        await blocker.begin(async (other) => {
          await other`select 1 from user_cursors where user_id = ${ann.id} for update`;
          sent = outbox.store(message(ann.id, ben.id));
          await eventually(
            () => waitingForLock(sql),
            10_000,
            "the send batch to wait for ann's row",
          );
          await other`select pg_advisory_xact_lock(${CONVERSATION_NAMESPACE}::int, ${
            directConversationLockKey(ann.id, ben.id)
          }::int)`;
        });
        const stored = await sent!;
        assertEquals(stored.ok && stored.created && stored.row.seq, 3);
        assertEquals(await cursor(ann.id, ben.id), { delivered: 0, read: 3 });
        const [{ n }] = await sql<{ n: number }[]>`select count(*)::int as n from messages`;
        assertEquals(n, 5, "stored once");
        assertEquals(retried(), ["cursors", "send"]);
      } finally {
        await Promise.all([app.end({ timeout: 5 }), blocker.end({ timeout: 5 })]);
      }
    });
  } finally {
    await db.drop();
  }
});
