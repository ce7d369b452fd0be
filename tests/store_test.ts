/**
 * @module The send batch on a real database, below the outbox: a batch that meets a clientId it
 * did not look for leaves no trace, and stored again, looking, it gets the first message back.
 */
import { assertEquals, assertRejects } from "./support/assert.ts";
import { createTestDatabase, withSql } from "./support/context.ts";
import { transaction } from "../src/db/connect.ts";
import { migrate } from "../src/db/migrate.ts";
import { BatchRaced, type NewMessage, storeMessages } from "../src/db/queries/chat.ts";

Deno.test("a batch meeting a stored clientId it did not look for leaves no trace, and looking finds it", async () => {
  const db = await createTestDatabase("raced");
  try {
    await withSql(db.url, async (sql) => {
      await migrate(sql);
      const [a, b] = await sql<{ id: number }[]>`
      insert into users (name, password_hash) values ('ann', 'x'), ('ben', 'x') returning id`;
      const send = (text: string, clientId: string | null): NewMessage => ({
        senderId: a.id,
        to: { user: b.id },
        text,
        clientId,
      });
      const store = (batch: NewMessage[], find: boolean) =>
        transaction(sql, (tx) => storeMessages(tx, batch, find));

      const [first] = await store([send("one", "c1")], false);
      assertEquals(first.ok && first.created && first.row.seq, 1);
      const state = () =>
        sql`select (select count(*) from messages)::int as messages,
                 (select max(last_seq) from conversations)::int as last,
                 (select read_seq from user_cursors where user_id = ${a.id})::int as read`;
      const before = await state();

      const again = [send("two", null), send("one", "c1"), send("three", "c3")];
      await assertRejects(() => store(again, false), BatchRaced);
      assertEquals(await state(), before, "the raced batch wrote nothing");

      // Beside them, messages the batch refuses: no row, no seq, no error.
      const nowhere: NewMessage[] = [
        { senderId: a.id, to: { user: b.id + 1000 }, text: "lost", clientId: null },
        { senderId: a.id, to: { group: 1000 }, text: "lost", clientId: null },
      ];
      const outcomes = await store([...again, ...nowhere], true);
      assertEquals(outcomes.map((o) => o.ok ? [o.created, o.row.seq, o.row.text] : o.reason), [
        [true, 2, "two"],
        [false, 1, "one"],
        [true, 3, "three"],
        "no_user",
        "no_group",
      ]);
      assertEquals((await state())[0].messages, 3);
      const ids = outcomes.map((o) => o.ok ? o.row.id : 0);
      assertEquals(ids[2] > ids[0] && ids[0] > ids[1], true, "ids grow with seq");
    });
  } finally {
    await db.drop();
  }
});
