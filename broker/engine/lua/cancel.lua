-- Cancel a run, from any front.
-- KEYS: events, meta, run, live. ARGV: 1 run_id, 2 data (run.cancelled), 3 maxlen, 4 ttl_ms
-- A queued run (no worker has it) is ended here and now; a running one is marked so that its
-- worker stops at its next append even if the control message never reaches it. The answer
-- names that worker, whose control channel the front then tells.
-- Answers {'ok', 'cancelled', id}, {'final', status, id}, {'missing'} or
-- {'cancelling', worker}.
local ended = final_or_missing()
if ended then return ended end
local status = redis.call('HGET', KEYS[3], 'status')
if status == 'running' then
  redis.call('HSET', KEYS[3], 'status', 'cancelling')
end
if status ~= 'queued' then return {'cancelling', redis.call('HGET', KEYS[3], 'worker') or ''} end
return terminate(ARGV[1], 'cancelled', 'run.cancelled', ARGV[2], ARGV[3], ARGV[4])
