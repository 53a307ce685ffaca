-- Queue a run's job, and index it, in one step (KEYS: the jobs stream, its index of queued
-- jobs (sorted set: entry id by enqueue time), the runs they are for (hash: entry id ->
-- "cid run_id"); one shard, one slot).
-- ARGV: 1 the job, 2 now (ms), 3 "cid run_id". Answers the job's entry id.
-- The index outlives the job's entry: a job lost or trimmed while its run waits is found there
-- and its run ended (see broker/engine/queue.py).
local id = redis.call('XADD', KEYS[1], '*', 'j', ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], id)
redis.call('HSET', KEYS[3], id, ARGV[3])
return id
