-- Take a job back, with its index entry (KEYS as enqueue.lua; ARGV: 1 the entry id): its run
-- will never start (refused, or its conversation deleted), so nothing is left to watch.
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
