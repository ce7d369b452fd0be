/**
 * @module The shapes of the values users choose (PROTOCOL.md): names, passwords, message text.
 * Shared by every transport so that each rejects the same input with the same words.
 */
import { z } from "zod";

/**
 * Text PostgreSQL can store and give back unchanged: no NUL character (a `text` value cannot hold
 * one) and no lone surrogate (it has no UTF-8 form, so it would come back altered).
 */
export const storableText = z.string({ error: "expected a string" })
  .refine((s) => !s.includes("\u0000"), "expected no NUL characters")
  .refine((s) => s.isWellFormed(), "expected valid Unicode (a lone surrogate has no UTF-8 form)");

export const userName = z.string({ error: "expected a string" }).regex(
  /^[A-Za-z0-9_.-]{1,32}$/,
  "expected 1 to 32 letters, digits, '_', '-' or '.'",
);

export const password = z.string({ error: "expected a string" })
  .min(8, "expected at least 8 characters")
  .max(256, "expected at most 256 characters");

/** Text is trimmed first; 1 to 4000 characters remain (counted as code points). */
export const messageText = storableText.transform((s) => s.trim())
  .refine((s) => s.length > 0, "expected some text after trimming")
  .refine((s) => [...s].length <= 4000, "expected at most 4000 characters");

export const groupName = storableText.transform((s) => s.trim())
  .refine((s) => s.length > 0 && [...s].length <= 64, "expected 1 to 64 characters");

export const groupDescription = storableText.transform((s) => s.trim())
  .refine((s) => [...s].length <= 500, "expected at most 500 characters");

/** Ids a client names: positive integers. Others can never match a row. */
export const id = z.number({ error: "expected an integer id" }).int("expected an integer id")
  .positive("expected a positive id").max(Number.MAX_SAFE_INTEGER, "expected a smaller id");
