-- A batch of sends in one statement, so that the node waits for the database once per batch.
--
-- Until now the node stored a batch in four round trips (BEGIN; the locks and reads, pipelined;
-- the write; COMMIT), and each one waited for the node's event loop to take its answer, busy as
-- it is with the sockets of the same messages: on the bench (direct, 8 in flight, durable) a
-- batch of about 120 messages took 12 ms from BEGIN to COMMIT, of which the database worked about
-- 3.5. In one statement the node can also queue the next batch behind this one on the same
-- connection, and the database goes from one to the next without waiting for the node at all.
--
-- store_messages does what storeMessages did in TypeScript, with the same rules (chat.ts):
-- it takes the conversations' advisory locks, in the order given; makes a missing conversation
-- row; checks each message (the recipient exists and neither blocks the other; the group exists
-- and the sender is a member); finds a message already stored under the same (sender, clientId);
-- draws ids and gapless seqs; writes the messages, the conversations' last_seq and the senders'
-- cursors; and returns one row per message, in batch order.
--
-- A clientId stored before, which the batch did not look for, leaves the write short of a row:
-- the attempt is rolled back (to the savepoint of its block) and made again, looking. An attempt
-- that PostgreSQL ends to break a deadlock (send and ack batches lock some of the same cursor
-- rows) is rolled back the same way, its locks released, and made again; `deadlocks` says how
-- often. Both happen inside the statement, so a batch queued behind it on the same connection
-- never overtakes it.

create type stored_message as (
  -- The message's place in the batch, from 1.
  n               int,
  -- 'ok', or why it was refused: 'no_user', 'no_group', 'not_member', 'blocked'.
  outcome         text,
  -- Stored by this batch. False: the message carries a clientId stored before (its columns are
  -- that message's) or one an earlier message of the batch carries (`same_as` names it).
  created         boolean,
  same_as         int,
  id              bigint,
  conversation_id bigint,
  seq             bigint,
  sender_name     text,
  recipient_id    bigint,
  group_id        bigint,
  -- Only on a message stored before: its text now. A new message's text is the one sent.
  body            text,
  at              timestamptz,
  edited_at       timestamptz,
  deleted         boolean,
  -- The group's members, on the batch's first message to that group.
  members         bigint[],
  -- Attempts ended by a deadlock before this one.
  deadlocks       int
);

create function store_messages(
  p_namespace  int,
  p_locks      int[],
  p_senders    bigint[],
  p_to_users   bigint[],
  p_to_groups  bigint[],
  p_bodies     text[],
  p_client_ids text[]
) returns setof stored_message
-- Every lookup here has its index. On the small tables of a young database the planner prefers a
-- scan of the whole table inside a loop (a conversation per sender and target, a cursor per
-- sender), and these tables are the ones each batch updates, their pages full of dead versions:
-- with scans off, a batch of 100 messages on 50 conversations took 5.0 ms instead of 6.4 (pgbench,
-- durable, commit included).
set enable_seqscan = off
language plpgsql as $$
declare
  v_find      boolean := false;
  v_deadlocks int := 0;
  v_ids       bigint[];
  v_rows      stored_message[];
  v_fresh     int;
  v_stored    int;
begin
  for attempt in 1 .. 4 loop
    begin
      -- The conversation locks (the caller names and sorts them, locks.ts), held until commit:
      -- batches sharing a conversation, on any node, run one after the other.
      perform pg_advisory_xact_lock(p_namespace, k)
         from unnest(p_locks) with ordinality as c(k, o)
        order by o;
      insert into conversations (user_a, user_b)
      select distinct least(x.s, x.u), greatest(x.s, x.u)
        from unnest(p_senders, p_to_users) as x(s, u)
       where x.u is not null
         and exists (select 1 from users where id = x.u)
         and exists (select 1 from users where id = x.s)
      on conflict do nothing;
      insert into conversations (group_id)
      select distinct g.id from groups g where g.id = any(p_to_groups)
      on conflict do nothing;
      -- Ids grow with seq within a conversation: drawn under the locks, given in batch order.
      v_ids := array(
        select nextval('messages_id_seq') from generate_series(1, cardinality(p_senders)) order by 1);

      -- The planner takes every unnest here for 10 rows and every CTE for one, so it would join
      -- two CTEs of the batch's size by a nested loop, quadratic in the batch: the only such join
      -- below (messages to their sender and target) it makes by hash, and everything else is a
      -- lookup by index, once per sender and target or once per message.
      with m as (
        select x.n::int as n, x.s as sender, x.u as to_user, x.g as to_group, x.b as body,
               x.c as client_id, coalesce(-x.g, x.u) as target
          from unnest(p_senders, p_to_users, p_to_groups, p_bodies, p_client_ids)
               with ordinality as x(s, u, g, b, c, n)
      ),
      -- Each sender and target once: may the sender write there, and in which conversation.
      pairs as (
        select p.sender, p.target, u.name as sender_name, c.id as cid, c.last_seq,
               case
                 when p.to_group is null then
                   case
                     when not exists (select 1 from users r where r.id = p.to_user)
                       then 'no_user'
                     when exists (
                       select 1 from blocks b
                        where (b.user_id = p.sender and b.blocked_id = p.to_user)
                           or (b.user_id = p.to_user and b.blocked_id = p.sender))
                       then 'blocked'
                     else 'ok'
                   end
                 when not exists (select 1 from groups g where g.id = p.to_group)
                   then 'no_group'
                 when not exists (
                   select 1 from group_members gm
                    where gm.group_id = p.to_group and gm.user_id = p.sender)
                   then 'not_member'
                 else 'ok'
               end as outcome
          from (select distinct sender, target, to_user, to_group from m) p
          left join users u on u.id = p.sender
          left join lateral (
            select c.id, c.last_seq from conversations c
             where p.to_group is null
               and c.user_a = least(p.sender, p.to_user) and c.user_b = greatest(p.sender, p.to_user)
            union all
            select c.id, c.last_seq from conversations c where c.group_id = p.to_group
          ) c on true
      ),
      -- With, on a second attempt, the message already stored under its clientId, if any.
      checked as (
        select m.*, p.outcome, p.cid, p.last_seq, p.sender_name, f.id as first_id,
               f.conversation_id as first_conversation, f.seq as first_seq,
               f.recipient_id as first_recipient, f.group_id as first_group,
               f.body as first_body, f.created_at as first_at, f.edited_at as first_edited_at,
               f.deleted_at is not null as first_deleted
          from m join pairs p on p.sender = m.sender and p.target = m.target
          -- The limit keeps the lookup a probe of the (sender_id, client_id) index per message:
          -- pulled up into a join, a plan cached while `messages` was small could hash it.
          left join lateral (
            select * from messages f
             where v_find and p.outcome = 'ok'
               and f.sender_id = m.sender and f.client_id = m.client_id
             limit 1) f on true
      ),
      -- The accepted ones not stored before; a clientId twice in the batch is stored once, at its
      -- first message.
      candidates as (
        select c.*,
               case when c.client_id is null then c.n
                    else min(c.n) over (partition by c.sender, c.client_id) end as first_n
          from checked c
         where c.outcome = 'ok' and c.first_id is null
      ),
      fresh as (
        select c.*, c.last_seq + row_number() over (partition by c.cid order by c.n) as seq,
               v_ids[row_number() over (order by c.n)] as id
          from candidates c
         where c.first_n = c.n
      ),
      bump as (
        update conversations c set last_seq = b.last
          from (select cid, max(seq) as last from fresh group by cid) b
         where c.id = b.cid
      ),
      stored as (
        insert into messages (id, conversation_id, seq, sender_id, recipient_id, group_id,
                              body, client_id)
        overriding system value
        select id, cid, seq, sender, to_user, to_group, body, client_id from fresh order by n
        on conflict (sender_id, client_id) do nothing
        returning id
      ),
      -- The senders' cursors: readSeq moves to the sender's highest new seq in each
      -- conversation of the batch. deliveredSeq moves there too, but only over the sender's
      -- last run of messages (seqs in a row, nobody else's between): an event of someone else
      -- just before it may not have reached any of the sender's devices (it was committed while
      -- the sender wrote), and a device without a cursor of its own starts from deliveredSeq,
      -- so moving past it would lose it. Within a conversation the batch's seqs are
      -- consecutive, so a run is where seq minus the sender's own count there stays the same.
      runs as (
        select sender, cid, seq,
               seq - row_number() over (partition by cid, sender order by seq) as run
          from fresh
      ),
      -- In ascending (user, conversation) order, as the ack batch locks cursors (moveCursors).
      x as (
        select r.sender as u, r.cid as c, max(r.seq) as s,
               min(r.seq) filter (where r.run = r.last_run) as run
          from (select *, max(run) over (partition by sender, cid) as last_run from runs) r
         group by r.sender, r.cid
         order by 1, 2
      ),
      sender as (
        update user_cursors uc
           set read_seq = greatest(uc.read_seq, x.s),
               delivered_seq = case when uc.delivered_seq >= x.run - 1
                                    then greatest(uc.delivered_seq, x.s)
                                    else uc.delivered_seq end
          from x
         where uc.user_id = x.u and uc.conversation_id = x.c
           and (uc.read_seq < x.s or (uc.delivered_seq >= x.run - 1 and uc.delivered_seq < x.s))
      ),
      first_cursor as (
        insert into user_cursors as uc (user_id, conversation_id, delivered_seq, read_seq)
        select x.u, x.c, case when x.run <= 1 then x.s else 0 end, x.s from x
         where not exists (
           select 1 from user_cursors o where o.user_id = x.u and o.conversation_id = x.c)
        on conflict (user_id, conversation_id) do update
           set read_seq = greatest(uc.read_seq, excluded.read_seq)
      ),
      -- One row per message. A new message was stored at now(), the transaction's time, which
      -- created_at defaults to.
      outcomes as (
        select c.n, c.outcome, null::boolean as created, null::int as same_as, null::bigint as id,
               null::bigint as conversation_id, null::bigint as seq, null::text as sender_name,
               null::bigint as recipient_id, null::bigint as group_id, null::text as body,
               null::timestamptz as at, null::timestamptz as edited_at, null::boolean as deleted
          from checked c where c.outcome <> 'ok'
        union all
        select c.n, 'ok', false, null, c.first_id, c.first_conversation, c.first_seq,
               c.sender_name, c.first_recipient, c.first_group, c.first_body, c.first_at,
               c.first_edited_at, c.first_deleted
          from checked c where c.first_id is not null
        union all
        select c.n, 'ok', false, c.first_n, null, null, null, null, null, null, null, null,
               null, null
          from candidates c where c.first_n <> c.n
        union all
        select f.n, 'ok', true, null, f.id, f.cid, f.seq, f.sender_name, f.to_user, f.to_group,
               null, now(), null, false
          from fresh f
      ),
      -- The members of each group of the batch, on its first message there.
      members as (
        select g.n, a.ids
          from (select to_group, min(n) as n from m where to_group is not null group by to_group) g
          cross join lateral (
            select array_agg(gm.user_id order by gm.user_id) as ids
              from group_members gm where gm.group_id = g.to_group) a
      )
      select array_agg(
               row(o.n, o.outcome, o.created, o.same_as, o.id, o.conversation_id, o.seq,
                   o.sender_name, o.recipient_id, o.group_id, o.body, o.at, o.edited_at,
                   o.deleted, g.ids, v_deadlocks)::stored_message
               order by o.n),
             (select count(*) from fresh),
             (select count(*) from stored)
        into v_rows, v_fresh, v_stored
        from outcomes o left join members g on g.n = o.n;

      if v_stored = v_fresh then
        return query select * from unnest(v_rows);
        return;
      end if;
      -- A row short: a clientId the batch did not look for was stored before, or by another
      -- batch since it looked. Its seq would be a gap.
      raise exception 'a clientId of the batch was stored before' using errcode = 'PR001';
    exception
      when deadlock_detected then
        if attempt = 4 then
          raise;
        end if;
        v_deadlocks := v_deadlocks + 1;
      when sqlstate 'PR001' then
        if attempt = 4 then
          raise;
        end if;
        v_find := true;
    end;
  end loop;
end;
$$;
