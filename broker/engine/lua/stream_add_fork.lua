-- Record a fork on its source (KEYS as for every stream script, of the source; ARGV[1] the
-- fork's name), unless the source is gone meanwhile; the set lives exactly as long as the
-- source's metadata. Answers 1, or 0 when the source is gone.
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('SADD', KEYS[4], ARGV[1])
local ttl = redis.call('PTTL', KEYS[2])
if ttl > 0 then redis.call('PEXPIRE', KEYS[4], ttl) end
return 1
