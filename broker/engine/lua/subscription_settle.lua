-- A dispatcher is done looking at a subscription it took (KEYS[1]: the sorted set of
-- subscriptions to look at). ARGV: 1 the member, 2 the lease score it took it with, 3 when to
-- look again (ms; '' never). Only while the score is still the dispatcher's own: a write that
-- marked the subscription pending meanwhile moved it, and that mark stands.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
return 1
