-- Done with an entry of a consumer group (see broker/engine/queue.py).
-- KEYS: the stream. ARGV: 1 group, 2 consumer, 3 entry id, 4 '1' to delete it.
-- Acknowledged (and deleted, for jobs, which no other group reads) if this consumer still holds
-- it: another worker that claimed it does that itself. Answers 1, or 0 when not held.
if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2]) == 0 then
  return 0
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
if ARGV[4] == '1' then redis.call('XDEL', KEYS[1], ARGV[3]) end
return 1
