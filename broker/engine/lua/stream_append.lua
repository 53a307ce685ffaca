-- Append to a stream and/or close it; an idempotent producer's check, the append it admits and
-- its new state are one step, so a retry can never be written twice. KEYS: those of every
-- stream script, then the set of subscriptions linked to it, which an append answers with (so
-- its writer marks them due without another round trip).
-- ARGV: 1 media type of the body, 2 close ('1' or ''), 3 Stream-Seq, 4 producer id, 5 epoch,
--       6 seq (all '' without a producer), 7 maxlen, 8 the most bytes the stream may hold
--       (0: no bound), 9 the subject the stream must belong to ('' anyone's), 10 the
--       incarnation (uid) the writer was admitted for ('' any), then the messages.
-- The owner and incarnation are checked here, so a write needs no read of the metadata
-- before it: the whole append is this one round trip.
-- Answers {outcome, tail, ...}: 'ok' (epoch, seq, and the linked subscriptions when it
-- appended), 'duplicate' (epoch, highest seq),
-- 'duplicate_closed' (epoch, seq), 'already_closed', 'closed', 'content_type' (the stream's
-- content type), 'stale_epoch' (current epoch), 'epoch_seq', 'gap' (expected, received),
-- 'seq', 'too_large' (the stream would hold more than its bound); or {'missing'} (none, or
-- another subject's), {'gone'} (soft-deleted), {'moved', uid} (another incarnation than the
-- one asked for: nothing written).
local ctn, close, seq, pid, epoch, pseq, maxlen, most =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8])
local owner, uid = ARGV[9], ARGV[10]
local m = redis.call('HMGET', KEYS[2], 'ctn', 'closed', 'seq', 'ttl', 'expms', 'tail', 'closer',
  'dttl', 'bytes', 'owner', 'deleted', 'uid', 'ct')
if not m[1] then return {'missing'} end
if owner ~= '' and m[10] ~= owner then return {'missing'} end
if m[11] == '1' then return {'gone'} end
if uid ~= '' and m[12] ~= uid then return {'moved', m[12] or ''} end
local tail = m[6]
local count = #ARGV - 10
local tuple = ''
if pid ~= '' then tuple = pid .. '\n' .. epoch .. '\n' .. pseq end
if m[2] == '1' then
  if tuple ~= '' and m[7] == tuple then return {'duplicate_closed', tail, epoch, pseq} end
  if count == 0 and close == '1' then return {'already_closed', tail} end
  return {'closed', tail}
end
if count > 0 and ctn ~= m[1] then return {'content_type', tail, m[13]} end
if pid ~= '' then
  local e, s = tonumber(epoch), tonumber(pseq)
  local state = redis.call('HGET', KEYS[3], pid)
  if state then
    local se_text, ss_text = string.match(state, '^(%d+):(%d+)$')
    local se, ss = tonumber(se_text), tonumber(ss_text)
    if e < se then return {'stale_epoch', tail, se_text} end
    if e == se then
      if s <= ss then return {'duplicate', tail, epoch, ss_text} end
      if s > ss + 1 then return {'gap', tail, string.format('%d', ss + 1), pseq} end
    elseif s ~= 0 then
      return {'epoch_seq', tail}
    end
  elseif s ~= 0 then
    return {'gap', tail, '0', pseq}
  end
end
if seq ~= '' and m[3] and m[3] ~= '' and seq <= m[3] then return {'seq', tail} end
local bytes = tonumber(m[9] or '0') + sizes(11)
if most > 0 and bytes > most then return {'too_large', tail} end
local after = tail
if count > 0 then tail = append_all(maxlen, 11, close == '1') end
local fields = {'tail', tail, 'bytes', bytes}
if seq ~= '' then fields[#fields + 1] = 'seq'; fields[#fields + 1] = seq end
if close == '1' then
  fields[#fields + 1] = 'closed'; fields[#fields + 1] = '1'
  fields[#fields + 1] = 'closer'; fields[#fields + 1] = tuple
end
redis.call('HSET', KEYS[2], unpack(fields))
if pid ~= '' then redis.call('HSET', KEYS[3], pid, epoch .. ':' .. pseq) end
expire(m[4], m[5], m[8])
notify(KEYS[5], after)
if count == 0 then return {'ok', tail, epoch, pseq} end
return {'ok', tail, epoch, pseq, redis.call('SMEMBERS', KEYS[6])}
