/**
 * @module The per-connection sequencer on its own, with the conversation log as a list: the orders
 * in which a batch's pushes and its sender's replies can meet, played out step by step.
 */
import { assertEquals } from "./support/assert.ts";
import type { LogEvent } from "../src/chat/chat.ts";
import { Sequencer, type SequencerOptions } from "../src/realtime/sequencer.ts";

const ME = 1;
const OTHER = 2;
const CONVERSATION = 7;

function event(seq: number, from: number): LogEvent {
  return {
    conversation: CONVERSATION,
    message: {
      id: 100 + seq,
      seq,
      from: { id: from, name: `u${from}` },
      to: { group: 3 },
      text: `m${seq}`,
      at: new Date(0).toISOString(),
    },
  };
}

/** A sequencer over `log`, writing what it sends to `out` ("m<seq>" for a push). */
function sequencerOver(
  log: LogEvent[],
  out: string[],
  options: Partial<SequencerOptions> = {},
): Sequencer {
  return new Sequencer({
    fetch: (_conversation, after, upTo) =>
      Promise.resolve(log.filter((e) => e.message.seq > after && e.message.seq <= upTo)),
    emit: (e) => out.push(`m${e.message.seq}`),
    failed: (error) => {
      throw error;
    },
    ...options,
  });
}

/** Resolves once `check` holds: the sequencer's queue runs on promises. */
async function settled(check: () => boolean): Promise<void> {
  for (let i = 0; i < 1_000 && !check(); i++) await new Promise((r) => setTimeout(r, 0));
  if (!check()) throw new Error("the sequencer did not get there");
}

Deno.test("sequencer: a sender's own messages in a gap go out as its replies, never also as pushes", async () => {
  // The log: 1 to 3 by someone else (missed live), then the sender's 4 and 6 between the others'
  // 5 and 7. The sender has two sends in flight; their replies come in request order.
  const log = [1, 2, 3, 4, 5, 6, 7].map((s) => event(s, s === 4 || s === 6 ? ME : OTHER));
  const out: string[] = [];
  let pending = 2;
  const sequencer = sequencerOver(log, out, { pendingReplies: () => pending });
  sequencer.start(CONVERSATION, 0);
  const answer = (seq: number) =>
    sequencer.reply(CONVERSATION, false, seq, () => {
      out.push(`s${seq}`);
      pending--;
    });

  // The batch commits 4 to 7: its pushes to this connection (5 and 7) go out before the replies.
  sequencer.push(log[4]);
  sequencer.push(log[6]);
  const first = answer(4);
  await settled(() => out.includes("s4"));
  await first;
  sequencer.progress();
  await answer(6);
  await settled(() => out.length === 7);

  assertEquals(out, ["m1", "m2", "m3", "s4", "m5", "s6", "m7"]);
});

Deno.test("sequencer: a group joined after login starts at the join, whichever of its events comes first", async () => {
  // Joined when the group's lastSeq was 2. Event 5 was committed on this node and comes first;
  // 3 and 4 come later over the bus.
  const log = [1, 2, 3, 4, 5].map((s) => event(s, OTHER));
  const out: string[] = [];
  const sequencer = sequencerOver(log, out, { streamStart: () => Promise.resolve(2) });
  sequencer.push(log[4]);
  sequencer.push(log[2]);
  sequencer.push(log[3]);
  await settled(() => out.length >= 3);

  assertEquals(out, ["m3", "m4", "m5"]);
});
