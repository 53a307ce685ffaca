-- Accept a user's message: append it and open its run, unless another run is active or the
-- conversation is somebody else's.
-- KEYS: events, meta, run, idempotency, live
-- ARGV: 1 run_id, 2 message_id, 3 assistant_message_id, 4 model, 5 data, 6 maxlen, 7 ttl_ms,
--       8 idem_ttl_ms, 9 idempotency record ('' when the request carries no key), 10 subject
--       ('' when nobody owns conversations: BROKER_AUTH=none), 11 '1' when the subject may
--       write every conversation, 12 title (kept if this message creates the conversation),
--       13 the run's job entry, 14 the latest time (ms, Redis's clock) it may be accepted
-- Answers {'ok', id, owner}, {'run_active', run}, {'replay', record}, {'orphaned'},
-- {'too_late'} or {'not_owner'}.
-- The deadline bounds the time between queueing the job and accepting its run: a worker that
-- finds no run for its job drops it, and the jobs index ends a run accepted after that, so a
-- front stalled between the two writes must not accept the run once its job may be gone.
-- The first message creates the conversation and records its subject as the owner, in this one
-- step: of many subjects racing to create one id, exactly one owns it and the others are refused
-- here, before anything is written. A conversation created with no owner has no owner to match.
-- The meta hash names every other key the conversation has (a field `key:<name>` each), so a
-- deletion finds them all without scanning the keyspace; it lives as long as they do.
if ARGV[10] ~= '' and ARGV[11] ~= '1' then
  local owner = redis.call('HGET', KEYS[2], 'owner')
  if owner ~= ARGV[10] and (owner or redis.call('HEXISTS', KEYS[2], 'first_id') == 1) then
    return {'not_owner'}
  end
end
if ARGV[9] ~= '' then
  local previous = redis.call('GET', KEYS[4])
  if previous then return {'replay', previous} end
end
-- This very accept already ran (repeated after a lost reply): answer as it did.
local accepted = redis.call('HGET', KEYS[3], 'message_event_id')
if accepted then return {'ok', accepted, redis.call('HGET', KEYS[2], 'owner') or ''} end
local now = redis.call('TIME')
if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > tonumber(ARGV[14]) then
  return {'too_late'}
end
local active = redis.call('HGET', KEYS[2], 'active_run')
if active and active ~= '' then return {'run_active', active} end
-- A worker gave up waiting for this run and dropped its job: the run must not start now.
if redis.call('EXISTS', KEYS[3]) == 1 then return {'orphaned'} end
local after = newest()
local id = append(ARGV[6], 'message', ARGV[5], ARGV[1])
redis.call('HSET', KEYS[2], 'active_run', ARGV[1])
if redis.call('HSETNX', KEYS[2], 'first_id', id) == 1 then
  redis.call('HSET', KEYS[2], 'title', ARGV[12])
  if ARGV[10] ~= '' then redis.call('HSET', KEYS[2], 'owner', ARGV[10]) end
end
redis.call('HSET', KEYS[2], 'key:' .. KEYS[3], '')
if ARGV[9] ~= '' then redis.call('HSET', KEYS[2], 'key:' .. KEYS[4], '') end
redis.call('HSET', KEYS[3], 'status', 'queued', 'message_id', ARGV[2],
           'assistant_message_id', ARGV[3], 'model', ARGV[4], 'message_event_id', id,
           'job_entry', ARGV[13])
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[7]) end
if ARGV[9] ~= '' then
  redis.call('SET', KEYS[4], ARGV[9] .. '\n' .. id, 'PX', ARGV[8])
end
notify(KEYS[5], after)
return {'ok', id, redis.call('HGET', KEYS[2], 'owner') or ''}
