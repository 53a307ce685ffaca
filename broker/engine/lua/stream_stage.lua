-- Copy one page of a fork's inherited entries into its staging stream (KEYS[1], in the fork's
-- slot), ids included; stream_create.lua then makes it the fork's data in one step. The
-- staging stream expires by itself when its creation never comes (a front died mid-copy).
-- ARGV: 1 its expiry in ms, then the entries as (id, name, data) triples, in order.
for i = 2, #ARGV, 3 do
  redis.call('XADD', KEYS[1], ARGV[i], 't', ARGV[i + 1], 'd', ARGV[i + 2], 'r', '')
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return (#ARGV - 1) / 3
