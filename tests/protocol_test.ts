/**
 * @module The frame decoder's fast path for `send` against the zod schemas it stands in for: every
 * frame decodes to the same request, or fails, exactly as the schemas alone decide.
 */
import { assertEquals } from "./support/assert.ts";
import { decodeFrame, FrameError, ref, REQUESTS } from "../src/realtime/protocol.ts";

/** What the schemas alone make of a frame: the request, or null when they refuse it. */
function bySchemas(frame: Record<string, unknown>): unknown {
  let validRef: unknown;
  if (Object.hasOwn(frame, "ref")) {
    const r = ref.safeParse(frame.ref);
    if (!r.success) return null;
    validRef = r.data;
  }
  const parsed = REQUESTS.send.safeParse(frame);
  if (!parsed.success) return null;
  return { ref: validRef, request: { ...parsed.data, type: "send" } };
}

function byDecoder(frame: Record<string, unknown>): unknown {
  try {
    const { ref, request } = decodeFrame(JSON.stringify(frame));
    return { ref, request };
  } catch (error) {
    if (error instanceof FrameError && error.code === "bad_frame") return null;
    throw error;
  }
}

Deno.test("decodeFrame decodes send exactly as the schemas do, valid or not", () => {
  const refs = [undefined, 1, -7, 2 ** 53, 1.5, "r", "x".repeat(64), "x".repeat(65), null, true];
  const targets = [
    { user: 1 },
    { group: 2 },
    { user: 0 },
    { user: -1 },
    { user: 1.5 },
    { user: "1" },
    { user: 2 ** 53 },
    { user: 1, group: 2 },
    { user: 1, extra: 1 },
    {},
    [1],
    null,
    "u",
  ];
  const texts = ["hello", "", "  ", 5, null, "a\u0000b", "\ud800"];
  const clientIds = [
    undefined,
    "c1",
    "",
    "x".repeat(64),
    "x".repeat(65),
    7,
    null,
    "a\u0000",
    "\udc00",
  ];
  let cases = 0;
  for (const r of refs) {
    for (const to of targets) {
      for (const text of texts) {
        for (const clientId of clientIds) {
          const frame: Record<string, unknown> = { type: "send", to, text };
          if (r !== undefined) frame.ref = r;
          if (clientId !== undefined) frame.clientId = clientId;
          if (cases % 7 === 0) frame.unknownField = "dropped";
          // Through JSON, as a frame arrives: what JSON cannot hold (a lone surrogate survives,
          // 2^53 stays a number) is compared after the same round trip.
          const arrived = JSON.parse(JSON.stringify(frame));
          assertEquals(
            byDecoder(arrived),
            bySchemas(arrived),
            `frame ${JSON.stringify(arrived)}`,
          );
          cases++;
        }
      }
    }
  }
  assertEquals(cases, refs.length * targets.length * texts.length * clientIds.length);
});
