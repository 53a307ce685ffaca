-- The owner's terminal event, under its fence: one terminal event per run.
-- KEYS: events, meta, run, live
-- ARGV: 1 run_id, 2 status, 3 name, 4 data, 5 maxlen, 6 ttl_ms, 7 worker, 8 epoch
-- With no owner given (worker ''), only a run that no worker has started can be ended (a
-- worker failing before it started the run).
-- Answers {'ok', status, id}, {'final', status, id}, {'missing'} or {'fenced'}.
local ended = final_or_missing()
if ended then return ended end
if ARGV[7] == '' then
  if redis.call('HGET', KEYS[3], 'status') ~= 'queued' then return {'fenced'} end
elseif fenced(ARGV[7], ARGV[8]) then
  return {'fenced'}
end
return terminate(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
