-- A dispatcher takes subscriptions that are due (KEYS[1]: the sorted set of subscriptions to
-- look at, scored by when). ARGV: 1 now (ms), 2 how many at most, 3 how long it leases them
-- (ms): their score becomes the end of that lease, so the look of a dispatcher that dies is
-- taken again then. Answers {member, lease score, ...}.
local now, count, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, count)
local out = {}
for _, member in ipairs(due) do
  local until_ms = now + lease
  redis.call('ZADD', KEYS[1], until_ms, member)
  out[#out + 1] = member
  out[#out + 1] = tostring(until_ms)
end
return out
