-- A callback (webhook), ack or release (pull-wake) of the current wake (KEYS: the
-- subscription's hash and links). Every one of: the token, the generation and the wake id
-- must be the current wake's, and its lease must not have lapsed; otherwise nothing moves.
-- ARGV: 1 now (ms), 2 the sha-256 of the bearer token, 3 generation, 4 wake id, 5 mode
--       ('callback', 'ack' or 'release'), 6 done ('1' or ''), then (path, entry id) pairs.
-- Answers {'released'} (done, or a release: idle now), {'extended', lease until} or
-- {'fenced'} (also for a deleted subscription).
local now = tonumber(ARGV[1])
local s = redis.call('HMGET', KEYS[1], 'status', 'phase', 'tok', 'gen', 'wake', 'until', 'sent',
  'lease')
if not live(s[1]) or s[3] == '' or s[3] ~= ARGV[2] or s[4] ~= ARGV[3] or s[5] ~= ARGV[4] then
  return {'fenced'}
end
local mode, lease = ARGV[5], tonumber(s[6] or '0')
if mode == 'callback' then
  if s[2] ~= 'wake' or (s[7] == '1' and lease < now) then return {'fenced'} end
elseif s[2] ~= 'claimed' or lease < now then
  return {'fenced'}
end
if mode ~= 'release' then apply_acks(7) end
if mode == 'release' or ARGV[6] == '1' then
  redis.call('HSET', KEYS[1], 'status', 'active', 'attempts', 0, 'next', 0)
  idle()
  return {'released'}
end
local ends = now + tonumber(s[8])
redis.call('HSET', KEYS[1], 'until', ends, 'sent', '1')
return {'extended', ends}
