-- Append a run's output: the hot path.
-- KEYS: events, meta, run, live
-- ARGV: 1 run_id, 2 maxlen, 3 ttl_ms, 4 sequence, 5 worker, 6 epoch, 7 refresh ('1': renew
--       the idle TTL), then (name, data) pairs.
-- Appends nothing unless the caller owns the run at its epoch and the run is still running: no
-- output lands after a take-over, a cancel request or a terminal event. The sequence number
-- (1, 2, ... per run) makes a retried append that had in fact been applied a no-op, so a lost
-- reply never duplicates output. One read of the run's hash (the fence, the status, the
-- sequence, the newest entry), the entries, one write of the hash, the notice; the TTL is
-- renewed only when the caller asks (every few seconds of a long run, not every append). A run
-- whose hash is gone (its conversation was deleted) answers 'missing' and writes nothing.
-- Answers {'running'} when written, else {'fenced'}, {'missing'} or {status}.
local state = redis.call('HMGET', KEYS[3], 'worker', 'epoch', 'status', 'appended', 'last_id')
if not state[3] then return {'missing'} end
if state[1] ~= ARGV[5] or state[2] ~= ARGV[6] then return {'fenced'} end
local status = state[3]
if tonumber(state[4] or '0') >= tonumber(ARGV[4]) then return {status} end
if status ~= 'running' then return {status} end
local after = state[5] or newest()
local id
for i = 8, #ARGV, 2 do id = append(ARGV[2], ARGV[i], ARGV[i + 1], ARGV[1]) end
redis.call('HSET', KEYS[3], 'appended', ARGV[4], 'last_id', id)
if ARGV[7] == '1' then
  for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
end
notify(KEYS[4], after)
return {'running'}
