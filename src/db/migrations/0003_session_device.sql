-- The device (the digest of the login token) each session was opened by. A `login {token}` that
-- resumes the very device whose socket is gone or going (a node drain, a dropped connection)
-- replaces that device's old session instead of being refused as `already_online`.
-- Null for sessions that have no token (the course protocol over TCP).
alter table sessions add column token_hash bytea;
