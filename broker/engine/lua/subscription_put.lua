-- Create a subscription, or re-confirm it (KEYS: its hash and its links).
-- ARGV: 1 now (ms), 2 its configuration's hash, then name/value pairs of its hash's fields
--       up to the separator '--', then (path, acked entry id) pairs of its explicit links.
-- A deleted (tombstoned) subscription is created anew; its generation goes on counting, so no
-- token or generation of the old one is ever current again.
-- Answers {'created'}, {'same'} or {'different'}.
local status, hash = unpack(redis.call('HMGET', KEYS[1], 'status', 'hash'))
if live(status) then
  if hash == ARGV[2] then return {'same'} end
  return {'different'}
end
redis.call('DEL', KEYS[2])
redis.call('PERSIST', KEYS[1])
local i = 3
while ARGV[i] ~= '--' do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('HSET', KEYS[1], 'hash', ARGV[2], 'status', 'active', 'attempts', 0, 'next', 0)
redis.call('HINCRBY', KEYS[1], 'gen', 0)
idle()
for j = i + 1, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[j], 'e|' .. ARGV[j + 1])
end
return {'created'}
