-- Remove a stream; ARGV[1] 'soft' keeps its metadata, marked deleted, while forks of it live
-- (its name stays taken; every request on it answers 410). Answers 1 when it existed. The
-- notice wakes live readers, who then find it gone.
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
if ARGV[1] == 'soft' then
  redis.call('DEL', KEYS[1], KEYS[3])
  redis.call('HSET', KEYS[2], 'deleted', '1')
else
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
end
notify(KEYS[5], '0-0')
return 1
