-- What the subscription scripts share (KEYS[1]: the subscription's hash, KEYS[2]: its links,
-- a hash of stream path -> '<kinds>|<acked entry id>', kinds 'g' (glob), 'e' (explicit) or
-- 'ge'; see broker/engine/subscriptions.py).
local function id_after(a, b)
  -- Whether entry id a ('ms-seq') comes after b.
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if not am or not bm then return false end
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end
local function split_link(value)
  local kinds, acked = string.match(value, '^(%a+)|(.*)$')
  return kinds, acked
end
-- Move the cursors of ARGV[first..] (path, entry id pairs) forward; a path that is not linked,
-- or an id not after its cursor, changes nothing.
local function apply_acks(first)
  for i = first, #ARGV, 2 do
    local value = redis.call('HGET', KEYS[2], ARGV[i])
    if value then
      local kinds, acked = split_link(value)
      if id_after(ARGV[i + 1], acked) then
        redis.call('HSET', KEYS[2], ARGV[i], kinds .. '|' .. ARGV[i + 1])
      end
    end
  end
end
local function live(status)
  return status and status ~= 'deleted'
end
-- Back to idle: no wake in flight, no holder, no token.
local function idle()
  redis.call('HSET', KEYS[1], 'phase', 'idle', 'tok', '', 'holder', '', 'until', 0, 'sent', '',
    'dlv_until', 0)
end
