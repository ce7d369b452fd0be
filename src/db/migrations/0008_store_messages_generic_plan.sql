-- store_messages plans its statements once per connection, whatever the batch's size.
--
-- PL/pgSQL plans each statement with the call's arrays first, then compares: it keeps a plan made
-- for any arrays (a generic plan) only while that costs no more than the plans made for the actual
-- ones. A batch of one message is cheap to plan for its own arrays, so batches of a few messages
-- (a quiet node, one message in flight per sender) were planned afresh at every call, and
-- planning the batch's big statement cost more than running it: on a durable cluster (pgbench,
-- one connection, commit included) a batch of one message took 1.70 ms a call, and 0.65 ms with
-- the generic plan; batches of 13, 100 and 500 messages took the same either way (1.3, 5.6 and
-- 20 ms). On the bench (durable, four rounds each, alternating) `group` (200 members, batches of
-- one or two messages) delivered 54,945, 61,930, 50,658 and 55,489 messages a second against
-- 49,573, 43,285, 43,959 and 46,169; `direct` and `latency` stayed within their spread from run
-- to run. The statements were written for the generic plan's estimates (see 0007).
alter function store_messages(int, int[], bigint[], bigint[], bigint[], text[], text[])
  set plan_cache_mode = force_generic_plan;
