-- Done with an entry of a consumer group (see broker/engine/queue.py).
-- KEYS: the stream, then for jobs its index and runs keys (see enqueue.lua).
-- ARGV: 1 group, 2 consumer, 3 entry id, 4 '1' to delete the entry, 5 '1' to forget its index
-- entry too (its run was started or ended here; a job dropped unhandled stays watched).
-- Acknowledged (and deleted, for jobs, which no other group reads) if this consumer still holds
-- it: another worker that claimed it does that itself. Answers 1, or 0 when not held.
if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2]) == 0 then
  return 0
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
if ARGV[4] == '1' then redis.call('XDEL', KEYS[1], ARGV[3]) end
if #KEYS == 3 and ARGV[5] == '1' then
  redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('HDEL', KEYS[3], ARGV[3])
end
return 1
