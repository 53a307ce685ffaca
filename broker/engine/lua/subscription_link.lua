-- Link streams to a subscription (KEYS: its hash and its links).
-- ARGV: 1 the most links it may have, 2 the kind ('g' glob or 'e' explicit), then (path,
--       acked entry id) pairs: a path not linked yet gets that cursor; one linked already
--       keeps its cursor and gains the kind.
-- Answers {'ok', added, refused} (refused: over the bound) or {'gone'}.
if not live(redis.call('HGET', KEYS[1], 'status')) then return {'gone'} end
local most, kind = tonumber(ARGV[1]), ARGV[2]
local added, refused = 0, 0
for i = 3, #ARGV, 2 do
  local value = redis.call('HGET', KEYS[2], ARGV[i])
  if value then
    local kinds, acked = split_link(value)
    if not string.find(kinds, kind, 1, true) then
      redis.call('HSET', KEYS[2], ARGV[i], 'ge|' .. acked)
    end
  elseif redis.call('HLEN', KEYS[2]) >= most then
    refused = refused + 1
  else
    redis.call('HSET', KEYS[2], ARGV[i], kind .. '|' .. ARGV[i + 1])
    added = added + 1
  end
end
return {'ok', added, refused}
