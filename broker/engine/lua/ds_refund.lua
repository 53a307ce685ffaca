-- Give back what an admitted Durable Streams write did not use (broker/engine/limits.py):
-- the bytes of a write that stored nothing, a creation that found its stream existing, or
-- the whole share of a stream that was deleted.
-- KEYS: the subject's storage hash, its streams-created counter of the day
-- ARGV: 1 storage field, 2 bytes to give back ('all': the field's whole share), 3 '1' to
--       give one creation back
local field, bytes = ARGV[1], ARGV[2]
local held = tonumber(redis.call('HGET', KEYS[1], field) or '0')
local back = held
if bytes ~= 'all' then back = math.min(held, tonumber(bytes)) end
if back > 0 then
  redis.call('HINCRBY', KEYS[1], field, -back)
  redis.call('HINCRBY', KEYS[1], '', -back)
end
if held - back <= 0 then redis.call('HDEL', KEYS[1], field) end
if ARGV[3] == '1' and tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then
  redis.call('DECR', KEYS[2])
end
return back
