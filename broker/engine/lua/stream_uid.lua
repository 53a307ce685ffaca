-- Give a stream created before streams had a uid one (KEYS[1]: its metadata hash; ARGV[1]:
-- the uid), unless it has one already or is gone: never a stray hash for a deleted stream.
if redis.call('HEXISTS', KEYS[1], 'ct') == 1 then
  redis.call('HSETNX', KEYS[1], 'uid', ARGV[1])
end
return redis.call('HGETALL', KEYS[1])
