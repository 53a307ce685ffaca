-- Delete a whole conversation in one step and end its streams.
-- KEYS: events, meta, live, then every key the meta hash names. ARGV: 1 the deletion notice.
-- Answers {'deleted', owner, run_id, job entry, ...} (owner '' when nobody owns it; the runs
-- no worker had started, whose jobs the caller withdraws), {'missing'}, or {'changed'} when the
-- meta hash names a key the caller did not pass (a message arrived since it read them: read
-- again).
if redis.call('EXISTS', KEYS[1], KEYS[2]) == 0 then return {'missing'} end
local passed = {}
for i = 4, #KEYS do passed[KEYS[i]] = true end
for _, field in ipairs(redis.call('HKEYS', KEYS[2])) do
  if string.sub(field, 1, 4) == 'key:' and not passed[string.sub(field, 5)] then
    return {'changed'}
  end
end
local answer = {'deleted', redis.call('HGET', KEYS[2], 'owner') or ''}
local runs = string.sub(KEYS[2], 1, -6) .. ':run:'  -- the keys of runs: <base>:run:<run_id>
for i = 4, #KEYS do
  if string.sub(KEYS[i], 1, #runs) == runs then
    local run_id = string.sub(KEYS[i], #runs + 1)
    local run = redis.call('HMGET', KEYS[i], 'worker', 'job_entry')
    if not run[1] and run[2] and run[2] ~= '' then
      answer[#answer + 1] = run_id
      answer[#answer + 1] = run[2]
    end
  end
end
redis.call('DEL', KEYS[1], KEYS[2])
for i = 4, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call(PUBLISH, KEYS[3], ARGV[1])
return answer
