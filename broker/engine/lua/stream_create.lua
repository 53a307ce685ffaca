-- Create a stream, or a fork of one.
-- ARGV: 1 this incarnation's uid (unique: a stream created again under the same name has
--       another, so readers of the first can tell), 2 content type, 3 its media type, 4 ttl,
--       5 expires-at, 6 expires-at in ms, 7 closed ('1' or ''), 8 owner, 9 maxlen, 10 the
--       fork's source, 11 offset and 12 sub-offset ('' when not a fork), 13 the default TTL
--       in seconds applied when the stream has neither TTL nor expiry ('' none), 14 the most
--       bytes the stream may hold (0: no bound), 15 the number of inherited entries, those
--       entries as (id, name, data) triples, then the initial messages.
-- Answers {'created', tail}, {'exists', same config ('1' or ''), owner, tail} or
-- {'too_large'}.
local uid, ct, ctn, ttl, exp, expms, closed, owner, maxlen =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local src, fo, fso, dttl, most = ARGV[10], ARGV[11], ARGV[12], ARGV[13], tonumber(ARGV[14])
local inherited = tonumber(ARGV[15])
if ttl ~= '' or expms ~= '' then dttl = '' end
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
local bytes = 0
for i = 1, inherited do bytes = bytes + #ARGV[15 + i * 3] end
bytes = bytes + sizes(16 + inherited * 3)
if most > 0 and bytes > most then return {'too_large'} end
redis.call('DEL', KEYS[1], KEYS[3], KEYS[4])
local tail = '0-0'
local first = 16
for i = 1, inherited do
  local at = 16 + (i - 1) * 3
  tail = redis.call('XADD', KEYS[1], ARGV[at], 't', ARGV[at + 1], 'd', ARGV[at + 2], 'r', '')
  first = at + 3
end
if first <= #ARGV then tail = append_all(maxlen, first, false) end
redis.call('HSET', KEYS[2], 'ct', ct, 'ctn', ctn, 'ttl', ttl, 'exp', exp, 'expms', expms,
  'closed', closed, 'owner', owner, 'tail', tail, 'src', src, 'fo', fo, 'fso', fso, 'uid', uid,
  'dttl', dttl, 'bytes', bytes)
expire(ttl, expms, dttl)
notify(KEYS[5], '0-0')
return {'created', tail}
