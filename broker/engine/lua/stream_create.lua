-- Create a stream, or a fork of one.
-- ARGV: 1 content type, 2 its media type, 3 ttl, 4 expires-at, 5 expires-at in ms, 6 closed
--       ('1' or ''), 7 owner, 8 maxlen, 9 the fork's source, 10 offset and 11 sub-offset (''
--       when not a fork), 12 the number of inherited entries, those entries as (id, name,
--       data) triples, then the initial messages.
-- Answers {'created', tail} or {'exists', same config ('1' or ''), owner, tail}.
local ct, ctn, ttl, exp, expms, closed, owner, maxlen =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local src, fo, fso, inherited = ARGV[9], ARGV[10], ARGV[11], tonumber(ARGV[12])
if redis.call('EXISTS', KEYS[2]) == 1 then
  local m = redis.call('HMGET', KEYS[2], 'ctn', 'ttl', 'expms', 'closed', 'owner', 'tail',
    'src', 'fo', 'fso', 'deleted')
  local same = ''
  if m[1] == ctn and m[2] == ttl and m[3] == expms and m[4] == closed and (m[7] or '') == src
    and (m[8] or '') == fo and (m[9] or '') == fso and m[10] ~= '1' then
    same = '1'
  end
  return {'exists', same, m[5] or '', m[6]}
end
redis.call('DEL', KEYS[1], KEYS[3], KEYS[4])
local tail = '0-0'
local first = 13
for i = 1, inherited do
  local at = 13 + (i - 1) * 3
  tail = redis.call('XADD', KEYS[1], ARGV[at], 't', ARGV[at + 1], 'd', ARGV[at + 2], 'r', '')
  first = at + 3
end
if first <= #ARGV then tail = append_all(maxlen, first, false) end
redis.call('HSET', KEYS[2], 'ct', ct, 'ctn', ctn, 'ttl', ttl, 'exp', exp, 'expms', expms,
  'closed', closed, 'owner', owner, 'tail', tail, 'src', src, 'fo', fo, 'fso', fso)
expire(ttl, expms)
notify(KEYS[5], '0-0')
return {'created', tail}
