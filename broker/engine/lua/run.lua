-- What the run transitions share (KEYS: events, meta, run, live; see broker/engine/conversations.py).

-- The run's final status and terminal event id when it has ended, {'missing'} when it does
-- not exist, nil otherwise.
local function final_or_missing()
  local status = redis.call('HGET', KEYS[3], 'status')
  if not status then return {'missing'} end
  if status == 'completed' or status == 'cancelled' or status == 'failed' then
    return {'final', status, redis.call('HGET', KEYS[3], 'terminal_event_id') or ''}
  end
  return nil
end

-- Fencing: a started run has an owner (`worker`, the worker holding its lease) and an epoch
-- raised whenever it changes hands; a write of its output must name both.
local function fenced(worker, epoch)
  return redis.call('HGET', KEYS[3], 'worker') ~= worker
      or redis.call('HGET', KEYS[3], 'epoch') ~= epoch
end

-- Writes the run's terminal event (name, data) with its new status, frees the conversation,
-- renews the idle TTL and publishes the notice: {'ok', status, id}.
local function terminate(run_id, status, name, data, maxlen, ttl_ms)
  local after = newest()
  local id = append(maxlen, name, data, run_id)
  redis.call('HSET', KEYS[3], 'status', status, 'terminal_event_id', id)
  if redis.call('HGET', KEYS[2], 'active_run') == run_id then
    redis.call('HSET', KEYS[2], 'active_run', '')
  end
  for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl_ms) end
  notify(KEYS[4], after)
  return {'ok', status, id}
end
