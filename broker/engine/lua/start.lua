-- Start a queued run for a worker, under a new epoch.
-- KEYS: events, meta, run, live
-- ARGV: 1 run_id, 2 worker, 3 data (run.started), 4 maxlen, 5 ttl_ms, 6 orphan ('1' or '0'),
--       7 job (the job entry the worker's lease is on)
-- Answers {'ok', run.started id, epoch}. Repeating it (a retry after a lost reply) answers as
-- the first call did; another job entry of the same run (a duplicate) or another worker is
-- refused with the run's status. The front queues a job just before it accepts the run, so a
-- worker may see the job first: 'missing' then means "not yet". With orphan = '1' the worker
-- gives up on it, and the run can never be accepted: unless the conversation does not exist
-- (deleted, or never created), where no key is written (an accept that comes this late is
-- refused by its own deadline, see accept.lua). The run remembers its newest entry
-- (`last_id`): while it runs, only its owner appends.
local status = redis.call('HGET', KEYS[3], 'status')
if (status == 'running' or status == 'cancelling')
   and redis.call('HGET', KEYS[3], 'worker') == ARGV[2]
   and redis.call('HGET', KEYS[3], 'job') == ARGV[7] then
  return {'ok', redis.call('HGET', KEYS[3], 'started_event_id'), redis.call('HGET', KEYS[3], 'epoch')}
end
if not status and ARGV[6] == '1' then
  if redis.call('EXISTS', KEYS[2]) == 0 then return {'missing'} end
  redis.call('HSET', KEYS[3], 'status', 'orphaned')
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
  return {'orphaned'}
end
if status ~= 'queued' then return {status or 'missing'} end
local after = newest()
local id = append(ARGV[4], 'run.started', ARGV[3], ARGV[1])
local epoch = redis.call('HINCRBY', KEYS[3], 'epoch', 1)
redis.call('HSET', KEYS[3], 'status', 'running', 'worker', ARGV[2], 'job', ARGV[7],
           'started_event_id', id, 'last_id', id)
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[5]) end
notify(KEYS[4], after)
return {'ok', id, tostring(epoch)}
