-- Argo CD health of a Backup (trading.dev/v1alpha1).
-- Runs in Argo CD's sandbox: base, table and a safe os library only (no string library).
--   spec not yet observed by the operator       -> Progressing
--   latest run Failed, or its verification failed -> Degraded
--   Pending / Running                          -> Progressing
--   Completed and verified (or verify: false)  -> Healthy
--   Completed, verification still running     -> Progressing
--   scheduled and suspended                    -> Suspended
--   scheduled, no run yet                      -> Healthy (waiting for the schedule)
local hs = {}
local spec = obj.spec or {}
local status = obj.status or {}

local generation = obj.metadata.generation
if status.observedGeneration == nil or (generation ~= nil and status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local function last_message()
  if status.history ~= nil and #status.history > 0 then
    local run = status.history[#status.history]
    if run.message ~= nil and run.message ~= "" then
      return run.message
    end
  end
  if status.conditions ~= nil then
    for _, c in ipairs(status.conditions) do
      if c.type == "Ready" and c.message ~= nil and c.message ~= "" then
        return c.message
      end
    end
  end
  return nil
end

if status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = "Backup failed: " .. (last_message() or "see the backup Job's logs")
  return hs
end

if status.phase == "Completed" and spec.verify ~= false and status.verified == false then
  hs.status = "Degraded"
  hs.message = "Backup completed but verification failed: " .. (last_message() or "restore check did not match")
  return hs
end

if spec.schedule ~= nil and spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Schedule suspended"
  return hs
end

if status.phase == "Pending" or status.phase == "Running" then
  hs.status = "Progressing"
  hs.message = "Backup " .. status.phase
  return hs
end

if status.phase == "Completed" then
  if spec.verify ~= false and status.verified ~= true then
    hs.status = "Progressing"
    hs.message = "Backup completed; verification pending"
    return hs
  end
  hs.status = "Healthy"
  if spec.verify == false then
    hs.message = "Backup completed (not verified)"
  else
    hs.message = "Backup completed and verified"
  end
  if status.location ~= nil then
    hs.message = hs.message .. ": " .. status.location
  end
  return hs
end

if spec.schedule ~= nil then
  hs.status = "Healthy"
  if status.nextScheduleTime ~= nil then
    hs.message = "Scheduled; first run at " .. status.nextScheduleTime
  else
    hs.message = "Scheduled; waiting for the first run"
  end
  return hs
end

hs.status = "Progressing"
hs.message = "Waiting for the operator to start the backup"
return hs
