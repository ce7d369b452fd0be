-- People (PROTOCOL.md v2): finding users by name, and blocks.

-- user.search matches a prefix of lower(name) with the pattern operators (~>=~, ~<~), which
-- compare bytes whatever the database's collation, so this index serves the range and its order.
-- (users_name_key, in the default collation's order, cannot serve a prefix under most locales.)
create index users_name_prefix_idx on users (lower(name) text_pattern_ops);

-- user_id blocks blocked_id. A block refuses direct messages, typing and friend requests in both
-- directions; the pair's friendship ends when it is made.
create table blocks (
  user_id    bigint not null references users (id) on delete cascade,
  blocked_id bigint not null references users (id) on delete cascade,
  created_at timestamptz not null default now(),
  primary key (user_id, blocked_id),
  check (user_id <> blocked_id)
);
-- "Who blocks me" for the checks that look both ways.
create index blocks_blocked_idx on blocks (blocked_id, user_id);
