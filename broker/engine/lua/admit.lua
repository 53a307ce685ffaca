-- Admit one request of a subject against its limits (see broker/engine/limits.py).
-- KEYS: requests this minute, requests last minute, posts this minute, posts last minute,
--       open streams, active runs
-- ARGV: 1 now_ms, 2 requests limit, 3 posts limit, 4 streams limit, 5 stream id, 6 stream
--       lease expiry ms, 7 runs limit, 8 conversation id, 9 run deadline ms, then conversations
--       whose runs the caller has seen end. A limit of 0 is not checked (off, or not this kind
--       of request). Counts nothing unless the request is admitted.
-- Answers {'ok'}, {'requests', ms} or {'posts', ms} (the milliseconds until the sliding count
-- falls below the limit, if nothing more comes), {'streams'}, or {'runs', conversations...}
-- (the conversations counted as running: the caller checks which have ended and asks again).
-- Rates are a sliding window estimated from two fixed one-minute counters.
local now = tonumber(ARGV[1])
local into = now % 60000
local function wait(current, previous, limit)
  if limit == 0 then return nil end
  local last = tonumber(redis.call('GET', previous) or '0')
  local this = tonumber(redis.call('GET', current) or '0')
  if last * (1 - into / 60000) + this < limit then return nil end
  if this < limit then
    return math.ceil(60000 * (1 - (limit - this) / last) - into) + 1
  end
  return math.ceil(60000 - into + 60000 * (1 - limit / this)) + 1
end
local requests, posts = tonumber(ARGV[2]), tonumber(ARGV[3])
local streams, runs = tonumber(ARGV[4]), tonumber(ARGV[7])
local waiting = wait(KEYS[1], KEYS[2], requests)
if waiting then return {'requests', waiting} end
waiting = wait(KEYS[3], KEYS[4], posts)
if waiting then return {'posts', waiting} end
if streams > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
  if redis.call('ZCARD', KEYS[5]) >= streams then return {'streams'} end
end
if runs > 0 then
  for i = 10, #ARGV do redis.call('ZREM', KEYS[6], ARGV[i]) end
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)
  if not redis.call('ZSCORE', KEYS[6], ARGV[8]) and redis.call('ZCARD', KEYS[6]) >= runs then
    local members = redis.call('ZRANGE', KEYS[6], 0, -1)
    table.insert(members, 1, 'runs')
    return members
  end
end
if requests > 0 then
  redis.call('INCR', KEYS[1])
  redis.call('PEXPIRE', KEYS[1], 120000)
end
if posts > 0 then
  redis.call('INCR', KEYS[3])
  redis.call('PEXPIRE', KEYS[3], 120000)
end
if streams > 0 then
  redis.call('ZADD', KEYS[5], ARGV[6], ARGV[5])
  redis.call('PEXPIRE', KEYS[5], tonumber(ARGV[6]) - now)
end
if runs > 0 then
  redis.call('ZADD', KEYS[6], ARGV[9], ARGV[8])
  redis.call('PEXPIRE', KEYS[6], tonumber(ARGV[9]) - now)
end
return {'ok'}
