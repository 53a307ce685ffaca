-- Tombstone a subscription (KEYS: its hash and links; ARGV: 1 how long the tombstone is kept,
-- ms): no token, wake or lease of it is current any more, so an in-flight callback, ack or
-- release fails and moves no cursor. Answers the paths it linked ({} when it was not live).
if not live(redis.call('HGET', KEYS[1], 'status')) then return {} end
local paths = redis.call('HKEYS', KEYS[2])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'status', 'deleted')
idle()
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return paths
