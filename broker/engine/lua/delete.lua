-- Delete a whole conversation in one step and end its streams.
-- KEYS: events, meta, live, then every key the meta hash names. ARGV: 1 the deletion notice.
-- Answers {'deleted', owner} ('' when nobody owns it), {'missing'}, or {'changed'} when the
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
local owner = redis.call('HGET', KEYS[2], 'owner') or ''
redis.call('DEL', KEYS[1], KEYS[2])
for i = 4, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call(PUBLISH, KEYS[3], ARGV[1])
return {'deleted', owner}
