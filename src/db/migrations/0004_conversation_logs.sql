-- Conversation logs and cursors (PROTOCOL.md v2, DESIGN.md "Messages: nothing lost").
--
-- Every conversation (a pair of users, or a group) is a row whose last_seq is the last sequence
-- number of its log. A batch of sends bumps it under the conversation's advisory lock (see
-- storeMessages), so seq is gapless and in commit order. Messages are the log's "message" events:
-- one row each, nothing per recipient. Edits and deletions are later events with their own seq
-- from the same counter; they belong in a table of their own keyed by (conversation_id, seq),
-- beside messages, so that catch-up reads both logs by seq (see eventsIn).
--
-- What a reader has seen is a cursor: per device (a login token, by its digest) and conversation,
-- and per user and conversation (delivered_seq, read_seq). The waiting_messages rows of version 1
-- become cursors here: a user's delivered_seq stops just before the first message still waiting
-- for it, so nothing that waited is lost.

create table conversations (
  id       bigint generated always as identity primary key,
  -- A direct conversation: its two users, the smaller id first (equal for notes to oneself).
  user_a   bigint references users (id) on delete cascade,
  user_b   bigint references users (id) on delete cascade,
  group_id bigint references groups (id) on delete cascade,
  last_seq bigint not null default 0 check (last_seq >= 0),
  check ((group_id is null) = (user_a is not null and user_b is not null)),
  check (user_a <= user_b),
  unique (user_a, user_b),
  unique (group_id)
);
create index conversations_user_b_idx on conversations (user_b) where group_id is null;

insert into conversations (group_id) select id from groups order by id;
insert into conversations (user_a, user_b)
select distinct least(sender_id, recipient_id), greatest(sender_id, recipient_id)
  from messages where group_id is null
 order by 1, 2;

alter table messages add column conversation_id bigint references conversations (id);
alter table messages add column seq bigint;

update messages m set conversation_id = c.id
  from conversations c
 where m.group_id is not null and c.group_id = m.group_id;
update messages m set conversation_id = c.id
  from conversations c
 where m.group_id is null
   and c.user_a = least(m.sender_id, m.recipient_id)
   and c.user_b = greatest(m.sender_id, m.recipient_id);
-- Ids grew with commit order within a conversation, so their order is the log's order.
update messages m set seq = n.seq
  from (select id, row_number() over (partition by conversation_id order by id) as seq
          from messages) n
 where n.id = m.id;
update conversations c set last_seq = s.last
  from (select conversation_id, max(seq) as last from messages group by conversation_id) s
 where s.conversation_id = c.id;

alter table messages alter column conversation_id set not null;
alter table messages alter column seq set not null;
drop index messages_direct_idx;
drop index messages_group_idx;
create unique index messages_log_key on messages (conversation_id, seq);

-- Per user and conversation. A missing row reads as 0 (nothing delivered, nothing read).
create table user_cursors (
  user_id         bigint not null references users (id) on delete cascade,
  conversation_id bigint not null references conversations (id) on delete cascade,
  delivered_seq   bigint not null default 0 check (delivered_seq >= 0),
  read_seq        bigint not null default 0 check (read_seq >= 0),
  primary key (user_id, conversation_id)
);

-- Per device (the SHA-256 digest of its login token, as auth_tokens keeps it) and conversation.
-- No foreign key: a token revoked while an ack is in flight must not fail the ack's batch; the
-- cursors of a revoked or expired token are deleted with it (accounts.ts).
create table device_cursors (
  token_hash      bytea not null check (octet_length(token_hash) = 32),
  conversation_id bigint not null references conversations (id) on delete cascade,
  seq             bigint not null check (seq >= 0),
  primary key (token_hash, conversation_id)
);

-- Every participant gets a cursor: delivered up to just before the first message still waiting
-- for it (or the whole log when nothing waits); read at least as far, and at least up to its own
-- last message there (writing in a conversation means having seen it up to there).
insert into user_cursors (user_id, conversation_id, delivered_seq, read_seq)
with participants as (
  select id as conversation_id, user_a as user_id from conversations where group_id is null
  union
  select id, user_b from conversations where group_id is null
  union
  select c.id, gm.user_id from conversations c join group_members gm on gm.group_id = c.group_id
),
first_waiting as (
  select w.user_id, m.conversation_id, min(m.seq) as seq
    from waiting_messages w join messages m on m.id = w.message_id
   group by w.user_id, m.conversation_id
),
own as (
  select sender_id as user_id, conversation_id, max(seq) as seq
    from messages group by sender_id, conversation_id
)
select p.user_id, p.conversation_id, d.seq, greatest(d.seq, coalesce(o.seq, 0))
  from participants p
  join conversations c on c.id = p.conversation_id
  left join first_waiting f on f.user_id = p.user_id and f.conversation_id = p.conversation_id
  left join own o on o.user_id = p.user_id and o.conversation_id = p.conversation_id
  cross join lateral (select coalesce(f.seq - 1, c.last_seq) as seq) d;

drop table waiting_messages;
