-- A delivery's outcome (KEYS: the subscription's hash and links), for the generation it
-- carried: a later generation, or a wake already settled by its callback, fences it.
-- ARGV: 1 now (ms), 2 generation, 3 outcome: 'sent' (a webhook answered 2xx: its lease runs
--       from now; a pull-wake's event is written: it waits for a claim), 'done' (a webhook
--       answered {"done": true}: the acks that follow are applied and it is idle), 'failed'
--       (retried then), 4 the retry's time (ms; 0 unless failed), then for 'done' (path,
--       entry id) pairs.
-- Answers {'ok'} or {'fenced'}.
local now = tonumber(ARGV[1])
local s = redis.call('HMGET', KEYS[1], 'status', 'phase', 'gen', 'lease', 'attempts')
if not live(s[1]) or s[2] ~= 'wake' or s[3] ~= ARGV[2] then return {'fenced'} end
local outcome = ARGV[3]
if outcome == 'sent' then
  redis.call('HSET', KEYS[1], 'sent', '1', 'status', 'active', 'attempts', 0, 'next', 0,
    'until', now + tonumber(s[4]))
elseif outcome == 'done' then
  apply_acks(5)
  redis.call('HSET', KEYS[1], 'status', 'active', 'attempts', 0, 'next', 0)
  idle()
else
  redis.call('HSET', KEYS[1], 'status', 'failed', 'attempts', tonumber(s[5] or '0') + 1,
    'next', ARGV[4])
  idle()
end
return {'ok'}
