-- A dispatcher's look at a subscription (KEYS: its hash and links): lapsed leases are ended
-- first; then, when it is idle, due and has pending work, a new wake is issued to this
-- dispatcher alone (a new generation, wake id and token; the delivery leased to it).
-- ARGV: 1 now (ms), 2 the dispatcher, 3 its delivery lease (ms), 4 pending ('1' or ''), 5 the
--       new wake's id, 6 the sha-256 of its token.
-- Answers {'issued', generation}, {'busy', until ms} (a wake or a lease is in flight until
-- then), {'waiting'} (a pull-wake wake written, not claimed yet), {'later', ms} (a retry's
-- time has not come), {'idle'} (nothing pending) or {'gone'}.
local now = tonumber(ARGV[1])
local s = redis.call('HMGET', KEYS[1], 'status', 'phase', 'until', 'sent', 'dlv_until', 'next',
  'type')
if not live(s[1]) then return {'gone'} end
local phase, lease, sent, delivery = s[2], tonumber(s[3] or '0'), s[4], tonumber(s[5] or '0')
if phase == 'claimed' or (phase == 'wake' and sent == '1' and s[7] == 'webhook') then
  if lease >= now then return {'busy', lease} end
  idle()
elseif phase == 'wake' and sent == '1' then
  return {'waiting'}
elseif phase == 'wake' then
  if delivery >= now then return {'busy', delivery} end
  idle()  -- its dispatcher died mid-delivery: that generation is dropped, a new one goes out
end
local retry = tonumber(s[6] or '0')
if retry > now then return {'later', retry} end
if ARGV[4] ~= '1' then return {'idle'} end
local generation = redis.call('HINCRBY', KEYS[1], 'gen', 1)
redis.call('HSET', KEYS[1], 'phase', 'wake', 'wake', ARGV[5], 'tok', ARGV[6], 'holder', '',
  'sent', '', 'dlv', ARGV[2], 'dlv_until', now + tonumber(ARGV[3]), 'until', 0)
return {'issued', generation}
