/**
 * @module Accounts: registration, login by password or token, logout. Passwords and tokens never
 * leave this module in clear except the token handed to its owner.
 */
import { createHash, randomBytes } from "node:crypto";
import type { z } from "zod";
import type { Querier } from "../db/connect.ts";
import * as q from "../db/queries/accounts.ts";
import { ChatError } from "./errors.ts";
import { decoyHash, hashPassword, verifyPassword } from "./passwords.ts";
import { password as passwordRule, userName } from "./rules.ts";

export type User = q.UserRow;

/** Registration input that passed the rules (see `Accounts.newAccount`). */
export interface NewAccount {
  name: string;
  password: string;
}

const BAD_CREDENTIALS = "Wrong name, password or token: check them and try again";

/** `value` checked against `schema`, or a `bad_frame` naming `field`. */
export function validate<T>(schema: z.ZodType<T>, field: string, value: unknown): T {
  const r = schema.safeParse(value);
  if (!r.success) {
    throw new ChatError("bad_frame", `Invalid field "${field}": ${r.error.issues[0].message}`);
  }
  return r.data;
}

function digest(token: string): Uint8Array {
  return createHash("sha256").update(token).digest();
}

export class Accounts {
  constructor(private readonly sql: Querier, private readonly tokenTtlMs: number) {}

  /** A name and password that meet the rules, or a `bad_frame` naming the one that does not. */
  static newAccount(name: unknown, password: unknown): NewAccount {
    return {
      name: validate(userName, "name", name),
      password: validate(passwordRule, "password", password),
    };
  }

  async register(account: NewAccount): Promise<User> {
    const hash = await hashPassword(account.password);
    const user = await q.insertUser(this.sql, account.name, hash);
    if (!user) {
      throw new ChatError("name_taken", `The name "${account.name}" is taken: choose another`);
    }
    return user;
  }

  /**
   * The user whose name (or numeric id, for the course protocol) and password these are. Any
   * mismatch gets the same error after the same work: a missing user is checked against a decoy.
   */
  async authenticate(login: string | number, password: unknown): Promise<User> {
    const row = typeof login === "number"
      ? await q.findUserById(this.sql, login)
      : userName.safeParse(login).success
      ? await q.findUserByName(this.sql, login)
      : null;
    const given = typeof password === "string" && password.length <= 256 ? password : "";
    const ok = await verifyPassword(given, row?.passwordHash ?? await decoyHash());
    if (!row || !ok) throw new ChatError("bad_credentials", BAD_CREDENTIALS);
    return { id: row.id, name: row.name };
  }

  /** A fresh token, not stored yet: 32 random bytes. */
  static newToken(): string {
    return randomBytes(32).toString("base64url");
  }

  /** The device a token names, as sessions record it: the token's SHA-256 digest. */
  static device(token: string): Uint8Array {
    return digest(token);
  }

  /** Stores `token` (a new one by default) for `userId`; only its SHA-256 digest is kept. */
  async issueToken(userId: number, token: string = Accounts.newToken()): Promise<string> {
    await q.insertToken(this.sql, digest(token), userId, this.tokenTtlMs);
    return token;
  }

  async authenticateToken(token: unknown): Promise<User> {
    const user = typeof token === "string" && token.length > 0 && token.length <= 256
      ? await q.findUserByToken(this.sql, digest(token))
      : null;
    if (!user) throw new ChatError("bad_credentials", BAD_CREDENTIALS);
    return user;
  }

  /** The device a token is: its digest in hex, as cursors and sessions name it. */
  static deviceOf(token: string): string {
    return createHash("sha256").update(token).digest("hex");
  }

  async revokeToken(token: string): Promise<void> {
    await q.deleteToken(this.sql, digest(token));
  }

  sweepExpiredTokens(): Promise<number> {
    return q.deleteExpiredTokens(this.sql);
  }
}
