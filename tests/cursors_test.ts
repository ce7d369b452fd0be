/**
 * @module The cursor batch on a real database: acks wait out a window to be written together,
 * unless a request waits for them, and then they go at once.
 */
import { assertEquals } from "./support/assert.ts";
import { eventually } from "./support/client.ts";
import { createTestDatabase, withSql } from "./support/context.ts";
import { transaction } from "../src/db/connect.ts";
import { migrate } from "../src/db/migrate.ts";
import { storeMessages } from "../src/db/queries/chat.ts";
import { CursorBatcher } from "../src/chat/acks.ts";

/** Longer than the test: a move written before it ends was hurried, not timed out. */
const FOREVER_MS = 10 * 60_000;

Deno.test("a hurried cursor batch is written at once; without a hurry it waits out its window", async () => {
  const db = await createTestDatabase("cursors");
  try {
    await withSql(db.url, async (sql) => {
      await migrate(sql);
      const [ann, ben] = await sql<{ id: number }[]>`
        insert into users (name, password_hash) values ('ann', 'x'), ('ben', 'x') returning id`;
      await transaction(sql, (tx) =>
        storeMessages(tx, [
          { senderId: ann.id, to: { user: ben.id }, text: "one", clientId: null },
          { senderId: ann.id, to: { user: ben.id }, text: "two", clientId: null },
        ], false));
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
