"""Lua for the writes: each one checks and changes a stream in a single atomic step.

Every script has KEYS = data stream, meta hash, producers hash, forks set, live channel (the
data stream first, where the shared notice helpers of ``broker.engine.live`` append). Each
message is one entry; the last entry of each append is named ``e`` (the others ``m``), so a
fork can tell where an append ended; the last entry of an append that closes the stream
carries ``r`` = ``c``, so a live reader learns of the close from the notice itself. Appends and the
close publish the live notice in the same script, so a front's hub hears of every change
exactly as Redis ordered it. An idempotent producer's check, the append it admits and its new
state are one script: a retry can never be written twice, whatever fails in between.
"""

from __future__ import annotations

_EXPIRE = """
local function append_all(maxlen, first, closing)
  local tail = nil
  for i = first, #ARGV do
    local name, run = 'm', ''
    if i == #ARGV then
      name = 'e'
      if closing then run = 'c' end
    end
    tail = append(maxlen, name, ARGV[i], run)
  end
  return tail
end
local function expire(ttl, expms)
  for i = 1, 4 do
    if ttl and ttl ~= '' then
      redis.call('PEXPIRE', KEYS[i], tonumber(ttl) * 1000)
    elseif expms and expms ~= '' then
      redis.call('PEXPIREAT', KEYS[i], expms)
    end
  end
end
"""

# ARGV: content type, its media type, ttl, expires-at, expires-at in ms, closed ('1' or ''),
# owner, maxlen, the fork's source, offset and sub-offset ('' when not a fork), the number of
# inherited entries, those entries as (id, name, data) triples, then the initial messages.
# Returns {'created', tail} or {'exists', same config ('1' or ''), owner, tail}.
CREATE = (
    _EXPIRE
    + """
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
"""
)

# ARGV: media type of the body, close ('1' or ''), Stream-Seq, producer id, epoch, seq (all ''
# without a producer), maxlen, then the messages. Returns {outcome, tail, ...}: 'ok' (epoch,
# seq), 'duplicate' (epoch, highest seq), 'duplicate_closed', 'already_closed', 'closed',
# 'content_type', 'stale_epoch' (current epoch), 'epoch_seq', 'gap' (expected, received),
# 'seq', or {'missing'} / {'gone'} (soft-deleted).
APPEND = (
    _EXPIRE
    + """
local ctn, close, seq, pid, epoch, pseq, maxlen =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local m = redis.call('HMGET', KEYS[2], 'ctn', 'closed', 'seq', 'ttl', 'expms', 'tail', 'closer')
if not m[1] then return {'missing'} end
if redis.call('HGET', KEYS[2], 'deleted') == '1' then return {'gone'} end
local tail = m[6]
local count = #ARGV - 7
local tuple = ''
if pid ~= '' then tuple = pid .. '\\n' .. epoch .. '\\n' .. pseq end
if m[2] == '1' then
  if tuple ~= '' and m[7] == tuple then return {'duplicate_closed', tail, epoch, pseq} end
  if count == 0 and close == '1' then return {'already_closed', tail} end
  return {'closed', tail}
end
if count > 0 and ctn ~= m[1] then return {'content_type', tail} end
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
local after = tail
if count > 0 then tail = append_all(maxlen, 8, close == '1') end
local fields = {'tail', tail}
if seq ~= '' then fields[#fields + 1] = 'seq'; fields[#fields + 1] = seq end
if close == '1' then
  fields[#fields + 1] = 'closed'; fields[#fields + 1] = '1'
  fields[#fields + 1] = 'closer'; fields[#fields + 1] = tuple
end
redis.call('HSET', KEYS[2], unpack(fields))
if pid ~= '' then redis.call('HSET', KEYS[3], pid, epoch .. ':' .. pseq) end
expire(m[4], m[5])
notify(KEYS[5], after)
return {'ok', tail, epoch, pseq}
"""
)

# Removes the stream; ARGV[1] 'soft' keeps its metadata, marked deleted, while forks of it
# live (its name stays taken; every request on it answers 410). Returns 1 when it existed.
# The notice wakes live readers, who then find it gone.
DELETE = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
if ARGV[1] == 'soft' then
  redis.call('DEL', KEYS[1], KEYS[3])
  redis.call('HSET', KEYS[2], 'deleted', '1')
else
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
end
notify(KEYS[5], '0-0')
return 1
"""

# Records a fork on its source (KEYS as above, of the source; ARGV[1] the fork's name), unless
# the source is gone meanwhile; the set lives exactly as long as the source's metadata.
ADD_FORK = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('SADD', KEYS[4], ARGV[1])
local ttl = redis.call('PTTL', KEYS[2])
if ttl > 0 then redis.call('PEXPIRE', KEYS[4], ttl) end
return 1
"""
