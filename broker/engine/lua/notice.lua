-- The live notice, shared by every script that appends (see broker/engine/live.py).
-- append(maxlen, name, data, run) XADDs one entry to KEYS[1] and keeps it for the notice;
-- newest() is the stream's newest entry id ('0-0': none); notify(channel, after) publishes
-- the notice: MessagePack [after, [[id, name, data, run], ...]], every string as bin.
-- PUBLISH is set by the loader: 'PUBLISH', or 'SPUBLISH' on a cluster.
local function bin(s)
  local n = #s
  if n < 256 then return string.char(196, n) .. s end
  if n < 65536 then return string.char(197) .. struct.pack('>I2', n) .. s end
  return string.char(198) .. struct.pack('>I4', n) .. s
end
local function array(n)
  if n < 16 then return string.char(144 + n) end
  if n < 65536 then return string.char(220) .. struct.pack('>I2', n) end
  return string.char(221) .. struct.pack('>I4', n)
end
local notice = {}
local function append(maxlen, name, data, run)
  local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 't', name, 'd', data, 'r', run)
  notice[#notice + 1] = array(4) .. bin(id) .. bin(name) .. bin(data) .. bin(run)
  return id
end
local function newest()
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #last == 0 then return '0-0' end
  return last[1][1]
end
local function notify(channel, after)
  redis.call(PUBLISH, channel, array(2) .. bin(after) .. array(#notice) .. table.concat(notice))
end
