-- A pull-wake worker claims a subscription (KEYS: its hash and links): the wake in flight, or
-- a new generation when none is; refused while another worker's lease holds.
-- ARGV: 1 now (ms), 2 the worker, 3 the sha-256 of the claim token, 4 a new wake id (used
--       when a new generation starts).
-- Answers {'ok', generation, wake id, lease until}, {'claimed', holder, generation},
-- {'not_pull'} or {'gone'}.
local now = tonumber(ARGV[1])
local s = redis.call('HMGET', KEYS[1], 'status', 'phase', 'until', 'holder', 'gen', 'wake',
  'type', 'lease')
if not live(s[1]) then return {'gone'} end
if s[7] ~= 'pull-wake' then return {'not_pull'} end
local phase, lease = s[2], tonumber(s[3] or '0')
if phase == 'claimed' and lease >= now then return {'claimed', s[4], s[5]} end
local generation, wake = tonumber(s[5] or '0'), s[6]
if phase ~= 'wake' then
  generation = redis.call('HINCRBY', KEYS[1], 'gen', 1)
  wake = ARGV[4]
end
local ends = now + tonumber(s[8])
redis.call('HSET', KEYS[1], 'phase', 'claimed', 'wake', wake, 'holder', ARGV[2],
  'tok', ARGV[3], 'until', ends, 'sent', '1', 'dlv_until', 0)
return {'ok', generation, wake, ends}
