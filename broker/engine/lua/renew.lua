-- Renew the leases a consumer still holds (see broker/engine/queue.py).
-- KEYS: the stream. ARGV: 1 group, 2 consumer, then entry ids.
-- Resets the idle time of the ids still pending for this consumer and answers them; the others
-- were claimed away or are gone.
local held = {}
local claim = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0}
for i = 3, #ARGV do
  if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2]) > 0 then
    held[#held + 1] = ARGV[i]
    claim[#claim + 1] = ARGV[i]
  end
end
if #held > 0 then
  claim[#claim + 1] = 'JUSTID'
  redis.call(unpack(claim))
end
return held
