-- Stop watching a job whose run has been dealt with (KEYS as enqueue.lua, without the stream
-- needed; ARGV: the entry ids).
for i = 1, #ARGV do
  redis.call('ZREM', KEYS[2], ARGV[i])
  redis.call('HDEL', KEYS[3], ARGV[i])
end
return 1
