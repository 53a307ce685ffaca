-- A worker claimed a job whose lease lapsed: if that job holds a started run, the run changes
-- hands (a new epoch) so that its old owner is fenced off, and the new owner ends it.
-- KEYS: events, meta, run, live. ARGV: 1 run_id, 2 worker, 3 job
-- Answers {'taken', status, epoch}, also to a repeat; a job that is not the run's lease (a
-- duplicate) takes nothing: {'other_job'}; a run that is not started answers its status.
local status = redis.call('HGET', KEYS[3], 'status')
if status ~= 'running' and status ~= 'cancelling' then return {status or 'missing'} end
if redis.call('HGET', KEYS[3], 'job') ~= ARGV[3] then return {'other_job'} end
if redis.call('HGET', KEYS[3], 'worker') == ARGV[2] then
  return {'taken', status, redis.call('HGET', KEYS[3], 'epoch')}
end
local epoch = redis.call('HINCRBY', KEYS[3], 'epoch', 1)
redis.call('HSET', KEYS[3], 'worker', ARGV[2])
return {'taken', status, tostring(epoch)}
