-- Admit one Durable Streams write of a subject against its limits (broker/engine/limits.py).
-- KEYS: messages this minute, messages last minute, storage (hash: '<uid> <name>' -> bytes
--       written to that incarnation of a stream, '' -> their total), streams created today
-- ARGV: 1 now_ms, 2 messages limit per minute, 3 messages of this write, 4 storage limit in
--       bytes, 5 bytes of this write, 6 the storage field of the stream written, 7 streams
--       created today limit (0: this write creates none, or no limit), then storage fields of
--       streams the caller found gone, dropped before anything is checked.
-- A limit of 0 is not checked. Counts nothing unless the write is admitted.
-- Answers {'ok'}, {'messages', ms} (the milliseconds until the sliding count falls below the
-- limit, if nothing more comes), {'created'} or {'storage', total}.
local now = tonumber(ARGV[1])
local into = now % 60000
for i = 8, #ARGV do
  local held = redis.call('HGET', KEYS[3], ARGV[i])
  if held then
    redis.call('HDEL', KEYS[3], ARGV[i])
    redis.call('HINCRBY', KEYS[3], '', -tonumber(held))
  end
end
local limit, count = tonumber(ARGV[2]), tonumber(ARGV[3])
if limit > 0 then
  local last = tonumber(redis.call('GET', KEYS[2]) or '0')
  local this = tonumber(redis.call('GET', KEYS[1]) or '0')
  if last * (1 - into / 60000) + this + count > limit then
    if this + count > limit then
      return {'messages', math.ceil(60000 - into) + 1}
    end
    return {'messages', math.ceil(60000 * (1 - (limit - this - count) / last) - into) + 1}
  end
end
local created = tonumber(ARGV[7])
if created > 0 and tonumber(redis.call('GET', KEYS[4]) or '0') >= created then
  return {'created'}
end
local quota, size = tonumber(ARGV[4]), tonumber(ARGV[5])
if quota > 0 then
  local total = tonumber(redis.call('HGET', KEYS[3], '') or '0')
  if size > 0 and total + size > quota then return {'storage', tostring(total)} end
end
if limit > 0 and count > 0 then
  redis.call('INCRBY', KEYS[1], count)
  redis.call('PEXPIRE', KEYS[1], 120000)
end
if created > 0 then
  redis.call('INCR', KEYS[4])
  redis.call('PEXPIRE', KEYS[4], 172800000)
end
if quota > 0 and size > 0 then
  redis.call('HINCRBY', KEYS[3], ARGV[6], size)
  redis.call('HINCRBY', KEYS[3], '', size)
end
return {'ok'}
