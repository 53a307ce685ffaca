-- What the Durable Streams writes share (KEYS: data stream, meta hash, producers hash, forks
-- set, live channel; see broker/engine/streams.py).
-- Each message is one entry; the last entry of each append is named 'e' (the others 'm'), so
-- a fork can tell where an append ended; the last entry of an append that closes the stream
-- carries r = 'c', so a live reader learns of the close from the notice itself.
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
-- A stream's own TTL or expiry, else the default TTL it was created with (dttl).
local function expire(ttl, expms, dttl)
  for i = 1, 4 do
    if ttl and ttl ~= '' then
      redis.call('PEXPIRE', KEYS[i], tonumber(ttl) * 1000)
    elseif expms and expms ~= '' then
      redis.call('PEXPIREAT', KEYS[i], expms)
    elseif dttl and dttl ~= '' then
      redis.call('PEXPIRE', KEYS[i], tonumber(dttl) * 1000)
    end
  end
end
-- The bytes of the messages ARGV[first..] (what a stream's byte bound counts).
local function sizes(first)
  local n = 0
  for i = first, #ARGV do n = n + #ARGV[i] end
  return n
end
