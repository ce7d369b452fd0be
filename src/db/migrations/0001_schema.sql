-- Parley's whole schema, in the course server's terms (user, friend, allgroup, groupuser,
-- offlinemessage), plus what makes presence and delivery true: nodes, sessions and the
-- user_state view. Ids are bigint; the driver is told to read int8 as a JSON number.

create table users (
  id            bigint generated always as identity primary key,
  name          text not null check (name ~ '^[A-Za-z0-9_.-]{1,32}$'),
  password_hash text not null,
  created_at    timestamptz not null default now()
);
-- Names are unique without regard to case.
create unique index users_name_key on users (lower(name));

-- Friendship is mutual and stored in both directions, so "my friends" is one index range.
create table friends (
  user_id    bigint not null references users (id) on delete cascade,
  friend_id  bigint not null references users (id) on delete cascade,
  created_at timestamptz not null default now(),
  primary key (user_id, friend_id),
  check (user_id <> friend_id)
);

create table groups (
  id          bigint generated always as identity primary key,
  name        text not null check (char_length(name) between 1 and 64),
  description text not null default '' check (char_length(description) <= 500),
  created_by  bigint not null references users (id),
  created_at  timestamptz not null default now()
);

create table group_members (
  group_id  bigint not null references groups (id) on delete cascade,
  user_id   bigint not null references users (id) on delete cascade,
  role      text not null check (role in ('creator', 'member')),
  joined_at timestamptz not null default now(),
  primary key (group_id, user_id)
);
create index group_members_user_idx on group_members (user_id);

-- A message goes to exactly one user or one group. (sender_id, client_id) makes a retried send
-- return the first message instead of storing a copy.
create table messages (
  id           bigint generated always as identity primary key,
  sender_id    bigint not null references users (id),
  recipient_id bigint references users (id),
  group_id     bigint references groups (id),
  body         text not null check (char_length(body) between 1 and 4000),
  client_id    text check (char_length(client_id) between 1 and 64),
  created_at   timestamptz not null default now(),
  check ((recipient_id is null) <> (group_id is null)),
  unique (sender_id, client_id)
);
create index messages_direct_idx on messages
  (least(sender_id, recipient_id), greatest(sender_id, recipient_id), id)
  where group_id is null;
create index messages_group_idx on messages (group_id, id) where group_id is not null;

-- The course's "offline messages", kept until the recipient acknowledges them, whether it was
-- offline or the push was lost.
create table waiting_messages (
  user_id    bigint not null references users (id) on delete cascade,
  message_id bigint not null references messages (id) on delete cascade,
  primary key (user_id, message_id)
);

-- One row per running server process. A node is live while expires_at is in the future (its
-- lease, renewed every heartbeat) and, on a server database, while it holds the session advisory
-- lock (LOCK_NAMESPACE, lock_key) on its own connection.
create table nodes (
  id           text primary key check (id ~ '^[A-Za-z0-9_.-]{1,64}$'),
  epoch        uuid not null,
  lock_key     integer not null,
  started_at   timestamptz not null default now(),
  heartbeat_at timestamptz not null default now(),
  expires_at   timestamptz not null
);

-- One row per logged-in socket. The epoch ties it to one incarnation of its node, so a session
-- left behind by a killed process never counts once the node has restarted.
create table sessions (
  id         bigint generated always as identity primary key,
  user_id    bigint not null references users (id) on delete cascade,
  node_id    text not null references nodes (id) on delete cascade,
  epoch      uuid not null,
  transport  text not null default 'ws' check (transport in ('ws', 'tcp')),
  created_at timestamptz not null default now()
);
create index sessions_user_idx on sessions (user_id);
create index sessions_node_idx on sessions (node_id);

-- Tokens are stored as SHA-256 digests; the token itself only ever reaches its owner.
create table auth_tokens (
  token_hash bytea primary key check (octet_length(token_hash) = 32),
  user_id    bigint not null references users (id) on delete cascade,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null
);
create index auth_tokens_user_idx on auth_tokens (user_id);
create index auth_tokens_expiry_idx on auth_tokens (expires_at);

-- The course's user.state, now always true: online only through a session of the current
-- incarnation of a node whose lease has not run out.
create view user_state as
select u.id, u.name,
       case when exists (
         select 1
           from sessions s
           join nodes n on n.id = s.node_id and n.epoch = s.epoch
          where s.user_id = u.id and n.expires_at > now()
       ) then 'online' else 'offline' end as state
  from users u;
