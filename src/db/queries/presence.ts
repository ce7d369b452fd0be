/**
 * @module SQL for nodes and sessions, and the rule that decides who is online: a user is online
 * while it has a session of the current incarnation (epoch) of a node whose lease has not run out.
 * The `user_state` view and every query here read that same rule, so a dead node's users read
 * offline as soon as its lease ends, even before anything is cleaned up.
 */
import type { Querier, Sql } from "../connect.ts";
import { LOCK_NAMESPACE } from "../locks.ts";

export type LoginPolicy = "reject" | "takeover" | "multi";
export type Transport = "ws" | "tcp";

/**
 * One incarnation of a server process. `epoch` changes when the node has to register anew after
 * the others took it for dead (see NodeRuntime's rejoin).
 */
export interface NodeIdentity {
  readonly id: string;
  epoch: string;
  readonly lockKey: number;
}

export interface OpenedSession {
  sessionId: number;
  /** The user had no live session before this one. */
  cameOnline: boolean;
  /** Sessions removed by LOGIN_POLICY=takeover, to be closed with 4001 by their nodes. */
  replaced: { id: number; node: string }[];
}

export interface ReapedNodes {
  nodes: string[];
  /** Users left without any live session. */
  offline: number[];
}

/**
 * Opens a session for `userId` on `node` under `policy`. The user's row is locked for the
 * transaction, so two logins of one user, on one node or two, are decided one after the other:
 * under `reject` exactly one of them succeeds. Null when `reject` refuses.
 *
 * `device` is the digest of the login token the session is opened with (null without one). Under
 * `reject`, a live session of that same device does not count against the login: the device is
 * resuming after its socket dropped or its node drained, and the old session is replaced (its node
 * closes the old socket if it is still open) rather than refused.
 */
export async function openSession(
  sql: Sql,
  node: NodeIdentity,
  userId: number,
  transport: Transport,
  policy: LoginPolicy,
  device: Uint8Array | null = null,
): Promise<OpenedSession | "node_unregistered" | null> {
  return await sql.begin(async (tx) => {
    // Three statements in one round trip (postgres.js pipelines them; PostgreSQL runs them in this
    // order): a login storm, as when a node drains, is mostly round trips. The user's row is
    // locked first, so the sessions read next include every login of this user decided before.
    // This node's row is locked (as the foreign key would lock it) ahead of the insert: a reaper
    // deleting it at this moment is waited for and then seen, instead of failing the insert on
    // the foreign key; a reaper that comes later skips the node until this transaction ends.
    const [, live, [registered]] = await Promise.all([
      tx`select 1 from users where id = ${userId} for update`,
      tx<{ id: number; same: boolean }[]>`
        select s.id, coalesce(s.token_hash = ${device}::bytea, false) as same
          from sessions s join nodes n on n.id = s.node_id and n.epoch = s.epoch
         where s.user_id = ${userId} and n.expires_at > now()`,
      tx`select 1 from nodes where id = ${node.id} and epoch = ${node.epoch} for key share`,
    ]);
    if (policy === "reject" && live.some((s) => !s.same)) return null;
    // Only while this incarnation of the node is registered: a node the others reaped must not
    // open sessions that nothing would count or clean up.
    if (!registered) return "node_unregistered";
    const [replaced, [row]] = await Promise.all([
      policy === "takeover"
        ? tx<{ id: number; node: string }[]>`
            delete from sessions where user_id = ${userId} returning id, node_id as node`
        : policy === "reject" && device !== null
        ? tx<{ id: number; node: string }[]>`
            delete from sessions where user_id = ${userId} and token_hash = ${device}::bytea
            returning id, node_id as node`
        : Promise.resolve([]),
      tx<{ id: number }[]>`
        insert into sessions (user_id, node_id, epoch, transport, token_hash)
        values (${userId}, ${node.id}, ${node.epoch}, ${transport}, ${device}::bytea)
        returning id`,
    ]);
    return { sessionId: row.id, cameOnline: live.length === 0, replaced: [...replaced] };
  });
}

/** Deletes a session; returns its user's id when that was the user's last live session. */
export async function closeSession(sql: Querier, sessionId: number): Promise<number | null> {
  const [row] = await sql<{ user_id: number; offline: boolean }[]>`
    with gone as (delete from sessions where id = ${sessionId} returning user_id)
    select g.user_id,
           not exists (
             select 1 from sessions s join nodes n on n.id = s.node_id and n.epoch = s.epoch
              where s.user_id = g.user_id and s.id <> ${sessionId} and n.expires_at > now()
           ) as offline
      from gone g`;
  return row?.offline ? row.user_id : null;
}

/** Which of `userIds` are online now. */
export async function onlineAmong(sql: Querier, userIds: readonly number[]): Promise<Set<number>> {
  if (userIds.length === 0) return new Set();
  const rows = await sql<{ user_id: number }[]>`
    select distinct s.user_id
      from sessions s join nodes n on n.id = s.node_id and n.epoch = s.epoch
     where s.user_id = any(${userIds as number[]}::bigint[]) and n.expires_at > now()`;
  return new Set(rows.map((r) => r.user_id));
}

/**
 * The drain's first step: deletes this node's sessions but keeps its row (and lease), and returns
 * the users who are offline now. Done before any socket hears 1001, so that a client reconnecting
 * at once to another node finds itself offline there.
 */
export async function endNodeSessions(sql: Sql, nodeId: string): Promise<number[]> {
  return await sql.begin(async (tx) => {
    const gone = await tx<{ user_id: number }[]>`
      delete from sessions where node_id = ${nodeId} returning user_id`;
    return await stillOffline(tx, gone.map((r) => r.user_id));
  });
}

/**
 * Deletes a node's sessions (all incarnations) and its row, and returns the users who are offline
 * now. This is both the start-up reset of `serve` and the `reset` command: one function.
 */
export async function resetNode(sql: Sql, nodeId: string): Promise<number[]> {
  return await sql.begin(async (tx) => {
    const gone = await tx<{ user_id: number }[]>`
      delete from sessions where node_id = ${nodeId} returning user_id`;
    await tx`delete from nodes where id = ${nodeId}`;
    return await stillOffline(tx, gone.map((r) => r.user_id));
  });
}

/** `reset --all`: every session of every node. Refuses while another node's lease is live. */
export async function resetAll(sql: Sql, force: boolean, self: string): Promise<number[]> {
  return await sql.begin(async (tx) => {
    if (!force) {
      const live = await tx<{ id: string }[]>`
        select id from nodes where expires_at > now() and id <> ${self}`;
      if (live.length > 0) {
        throw new LiveNodesError(live.map((n) => n.id));
      }
    }
    const gone = await tx<{ user_id: number }[]>`delete from sessions returning user_id`;
    await tx`delete from nodes`;
    return [...new Set(gone.map((r) => r.user_id))];
  });
}

export class LiveNodesError extends Error {
  override name = "LiveNodesError";
  constructor(readonly nodes: string[]) {
    super(
      `Refusing to reset every node while ${nodes.map((n) => `"${n}"`).join(", ")} ${
        nodes.length === 1 ? "is" : "are"
      } live: stop ${nodes.length === 1 ? "it" : "them"} first, or pass --force`,
    );
  }
}

/** Of `userIds`, those with no live session left. */
async function stillOffline(sql: Querier, userIds: number[]): Promise<number[]> {
  if (userIds.length === 0) return [];
  const rows = await sql<{ id: number }[]>`
    select u.id from unnest(${[...new Set(userIds)]}::bigint[]) as u(id)
     where not exists (
       select 1 from sessions s join nodes n on n.id = s.node_id and n.epoch = s.epoch
        where s.user_id = u.id and n.expires_at > now())`;
  return rows.map((r) => r.id);
}

/**
 * Registers a fresh incarnation of this node with a lease of `ttlMs`. Replaces any earlier row of
 * the same id; its sessions, of an older epoch, no longer count from this moment.
 */
export async function registerNode(sql: Querier, node: NodeIdentity, ttlMs: number): Promise<void> {
  await sql`
    insert into nodes (id, epoch, lock_key, started_at, heartbeat_at, expires_at)
    values (${node.id}, ${node.epoch}, ${node.lockKey}, now(), now(), now() + ${ttlMs} * interval '1 millisecond')
    on conflict (id) do update
      set epoch = excluded.epoch, lock_key = excluded.lock_key, started_at = now(),
          heartbeat_at = now(), expires_at = excluded.expires_at`;
}

export type Renewal = "renewed" | "lost";

/**
 * Renews this node's lease. "lost" means another node reaped it (its lease ran out or its lock was
 * seen free): its sessions are gone and it must start again as a new incarnation.
 */
export async function renewLease(
  sql: Querier,
  node: NodeIdentity,
  ttlMs: number,
): Promise<Renewal> {
  const rows = await sql`
    update nodes set heartbeat_at = now(), expires_at = now() + ${ttlMs} * interval '1 millisecond'
     where id = ${node.id} and epoch = ${node.epoch}
    returning 1`;
  return rows.length === 1 ? "renewed" : "lost";
}

/**
 * Takes or confirms this node's session advisory lock on the connection `lockSql` runs on. Returns
 * false when another session holds it (another live process claims this NODE_ID).
 */
export async function holdNodeLock(lockSql: Sql, node: NodeIdentity): Promise<boolean> {
  const [row] = await lockSql<{ held: boolean }[]>`
    select case
      when exists (
        select 1 from pg_locks
         where locktype = 'advisory' and pid = pg_backend_pid() and granted
           and classid = ${LOCK_NAMESPACE}::int::oid and objid = ${node.lockKey}::int::oid
           and objsubid = 2)
      then true
      else pg_try_advisory_lock(${LOCK_NAMESPACE}::int, ${node.lockKey}::int)
    end as held`;
  return row.held;
}

/**
 * Ends the database session that holds `node`'s lock when the node's lease has run out: its
 * process is gone (host lost, network cut) but the database has not yet seen the connection die,
 * which TCP alone may take hours to notice. A live process renews its lease every heartbeat, so
 * this never touches one. Returns true when a holder was ended.
 */
export async function endStaleLockHolder(sql: Querier, node: NodeIdentity): Promise<boolean> {
  const rows = await sql`
    select pg_terminate_backend(l.pid)
      from pg_locks l
     where l.locktype = 'advisory' and l.granted and l.pid <> pg_backend_pid()
       and l.classid = ${LOCK_NAMESPACE}::int::oid and l.objid = ${node.lockKey}::int::oid
       and l.objsubid = 2
       and not exists (select 1 from nodes n where n.id = ${node.id} and n.expires_at > now())`;
  return rows.length > 0;
}

/**
 * Deletes every other node that is dead, with its sessions: its lease ran out, or (on a server
 * database) its advisory lock is free because the process holding it is gone.
 *
 * Compare-and-delete: the candidates are locked FOR UPDATE and re-checked by the DELETE itself, so a
 * node that renewed its lease a moment ago is never deleted; its renewal either committed before
 * (and the row no longer matches) or waits behind this transaction and then finds its row gone,
 * which it reads as "lost". The transaction-level advisory locks taken by the probe are released at
 * commit.
 */
export async function reapDeadNodes(
  sql: Sql,
  self: string,
  probeLocks: boolean,
): Promise<ReapedNodes> {
  return await sql.begin(async (tx) => {
    const dead = await tx<{ id: string }[]>`
      select id from nodes
       where id <> ${self}
         and (expires_at <= now()
              or (${probeLocks} and pg_try_advisory_xact_lock(${LOCK_NAMESPACE}::int, lock_key)))
       for update skip locked`;
    if (dead.length === 0) return { nodes: [], offline: [] };
    const ids = dead.map((d) => d.id);
    const gone = await tx<{ user_id: number }[]>`
      delete from sessions where node_id = any(${ids}::text[]) returning user_id`;
    await tx`delete from nodes where id = any(${ids}::text[])`;
    return { nodes: ids, offline: await stillOffline(tx, gone.map((g) => g.user_id)) };
  });
}

export interface Peer {
  id: string;
  lockKey: number;
}

/**
 * The node this one watches: the next id after `self` in the ring of registered nodes, so that
 * every node is watched by one other while two or more live (null when `self` is alone), and the
 * server process of the watcher's own connection (a new one means that connection was made again).
 */
export async function nextPeer(
  sql: Querier,
  self: string,
): Promise<{ peer: Peer | null; backend: number }> {
  const [row] = await sql<{ id: string | null; lock_key: number | null; backend: number }[]>`
    select p.id, p.lock_key, pg_backend_pid() as backend
      from (select 1) as one
      left join lateral (
        select id, lock_key from nodes where id <> ${self}
         order by id <= ${self}, id
         limit 1) as p on true`;
  return {
    peer: row.id === null ? null : { id: row.id, lockKey: row.lock_key! },
    backend: row.backend,
  };
}

/**
 * Waits up to `ms` for `peer`'s advisory lock to be free: PostgreSQL grants it to this waiter the
 * moment the connection holding it ends, which is when the peer's process dies. The lock is taken
 * for a transaction only and released at once. True when it was free (the peer is dead), false
 * when the wait ran out (the peer is alive).
 */
export async function awaitLockFree(sql: Sql, peer: Peer, ms: number): Promise<boolean> {
  try {
    await sql.begin(async (tx) => {
      await tx`select set_config('lock_timeout', ${`${Math.max(1, Math.round(ms))}ms`}, true)`;
      await tx`select pg_advisory_xact_lock(${LOCK_NAMESPACE}::int, ${peer.lockKey}::int)`;
    });
    return true;
  } catch (error) {
    // lock_not_available: the wait ran out while the holder lives.
    if ((error as { code?: string })?.code === "55P03") return false;
    throw error;
  }
}
