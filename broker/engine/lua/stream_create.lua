-- Create a stream, or a fork of one (KEYS: those of every stream script, then the fork's
-- staging stream, which stream_stage.lua filled with its inherited entries page by page).
-- ARGV: 1 this incarnation's uid (unique: a stream created again under the same name has
--       another, so readers of the first can tell), 2 content type, 3 its media type, 4 ttl,
--       5 expires-at, 6 expires-at in ms, 7 closed ('1' or ''), 8 owner, 9 maxlen, 10 the
--       fork's source, 11 offset and 12 sub-offset ('' when not a fork), 13 the default TTL
--       in seconds applied when the stream has neither TTL nor expiry ('' none), 14 the most
--       bytes the stream may hold (0: no bound), 15 the bytes of the inherited entries, 16
--       the id of the last of them ('0-0': none), then the initial messages.
-- Answers {'created', tail}, {'exists', same config ('1' or ''), owner, tail}, {'too_large'}
-- or {'stage_lost'} (the staged entries expired before the creation came).
local uid, ct, ctn, ttl, exp, expms, closed, owner, maxlen =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local src, fo, fso, dttl, most = ARGV[10], ARGV[11], ARGV[12], ARGV[13], tonumber(ARGV[14])
local inherited, last = tonumber(ARGV[15]), ARGV[16]
if ttl ~= '' or expms ~= '' then dttl = '' end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('DEL', KEYS[6])
  local m = redis.call('HMGET', KEYS[2], 'ctn', 'ttl', 'expms', 'closed', 'owner', 'tail',
    'src', 'fo', 'fso', 'deleted')
  local same = ''
  if m[1] == ctn and m[2] == ttl and m[3] == expms and m[4] == closed and (m[7] or '') == src
    and (m[8] or '') == fo and (m[9] or '') == fso and m[10] ~= '1' then
    same = '1'
  end
  return {'exists', same, m[5] or '', m[6]}
end
local bytes = inherited + sizes(17)
if most > 0 and bytes > most then
  redis.call('DEL', KEYS[6])
  return {'too_large'}
end
redis.call('DEL', KEYS[1], KEYS[3], KEYS[4])
local tail = '0-0'
if last ~= '0-0' then
  if redis.call('EXISTS', KEYS[6]) == 0 then return {'stage_lost'} end
  redis.call('RENAME', KEYS[6], KEYS[1])
  redis.call('PERSIST', KEYS[1])
  tail = last
end
if 17 <= #ARGV then tail = append_all(maxlen, 17, false) end
redis.call('HSET', KEYS[2], 'ct', ct, 'ctn', ctn, 'ttl', ttl, 'exp', exp, 'expms', expms,
  'closed', closed, 'owner', owner, 'tail', tail, 'src', src, 'fo', fo, 'fso', fso, 'uid', uid,
  'dttl', dttl, 'bytes', bytes)
expire(ttl, expms, dttl)
notify(KEYS[5], '0-0')
return {'created', tail}
