-- Remove one kind of link of a path (KEYS: the subscription's hash and links; ARGV: 1 the
-- kind, 2 the path). A link of both kinds keeps the other.
-- Answers {'ok', 1} when the path is no longer linked at all, {'ok', 0} otherwise, {'gone'}.
if not live(redis.call('HGET', KEYS[1], 'status')) then return {'gone'} end
local value = redis.call('HGET', KEYS[2], ARGV[2])
if not value then return {'ok', 0} end
local kinds, acked = split_link(value)
local left = string.gsub(kinds, ARGV[1], '')
if left == '' then
  redis.call('HDEL', KEYS[2], ARGV[2])
  return {'ok', 1}
end
redis.call('HSET', KEYS[2], ARGV[2], left .. '|' .. acked)
return {'ok', 0}
