-- Edits and deletions (PROTOCOL.md v2): later events of a conversation's log, each with its own
-- seq from the conversation's counter, beside the messages they change. A message row keeps its
-- current state: the latest text and when it was edited, or when it was deleted (its text gone).
alter table messages add column edited_at timestamptz;
alter table messages add column deleted_at timestamptz;
alter table messages drop constraint messages_body_check;
alter table messages add constraint messages_body_check check (
  case when deleted_at is null then char_length(body) between 1 and 4000 else body = '' end);

create table message_events (
  conversation_id bigint not null references conversations (id) on delete cascade,
  seq             bigint not null check (seq > 0),
  message_id      bigint not null references messages (id) on delete cascade,
  kind            text not null check (kind in ('edited', 'deleted')),
  primary key (conversation_id, seq)
);
