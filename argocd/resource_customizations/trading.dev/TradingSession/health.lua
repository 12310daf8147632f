-- Argo CD health of a TradingSession (trading.dev/v1alpha1).
-- Runs in Argo CD's sandbox: base, table and a safe os library only (no string library).
--   deleting, or spec not yet observed by the operator -> Progressing
--   halted (user or automatic, latched in status)      -> Suspended, naming the halt id to resume
--   phase Error, or its RiskPolicy not applied          -> Degraded
--   Reducing (a latched breach, or the policy's mode)    -> Degraded: only exposure-reducing orders
--   suspend (maintenance, workers scaled to zero)       -> Suspended
--   workers not ready, pre-market checks failing        -> Progressing, saying what is missing
--   Ready=True (trading), or idle between sessions      -> Healthy
--     (Initializing and MarketClose are the calendar's quiet phases, not a rollout in progress)
local hs = {}

local function condition(ctype)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function text(value, fallback)
  if value == nil or value == "" then
    return fallback
  end
  return tostring(value)
end

if obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Deleting: halting and waiting for the executor to handle open orders"
  return hs
end

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to start the session"
  return hs
end

local status = obj.status
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local halt = status.halt
if (halt ~= nil and halt.active == true) or status.phase == "Halted" then
  hs.status = "Suspended"
  if halt == nil or halt.active ~= true then
    hs.message = "Halted"
  elseif halt.source == "User" or halt.source == nil then
    hs.message = "Halted by User: " .. text(halt.reason, "no reason given") .. " (resume: set spec.halted to false)"
  else
    hs.message = "Halted by " .. halt.source .. ": " .. text(halt.reason, "no reason given") ..
      " (resume: set spec.resumeHaltId to " .. text(halt.id, "status.halt.id") .. ")"
  end
  local resumable = condition("Resumable")
  if resumable ~= nil and resumable.status == "False" and resumable.message ~= nil and resumable.message ~= "" then
    hs.message = hs.message .. "; resume blocked: " .. resumable.message
  end
  return hs
end

local ready = condition("Ready")
if status.phase == "Error" then
  hs.status = "Degraded"
  if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
    hs.message = "Error: " .. ready.message
  else
    hs.message = "Error"
  end
  return hs
end

local policy = condition("PolicyApplied")
if policy ~= nil and policy.status == "False" then
  hs.status = "Degraded"
  hs.message = "RiskPolicy not applied (" .. text(policy.reason, "Unknown") .. "): " .. text(policy.message, "not trading")
  return hs
end

if ready ~= nil and ready.status == "False" and ready.reason == "Reducing" then
  hs.status = "Degraded"
  hs.message = status.phase .. ": " .. text(ready.message, "Reducing: only exposure-reducing orders")
  return hs
end

if obj.spec ~= nil and obj.spec.suspend == true then
  local suspended = condition("Suspended")
  if suspended ~= nil and suspended.status == "False" then
    hs.status = "Progressing"
    hs.message = "Suspend pending: " .. text(suspended.message, "waiting for the operator")
    return hs
  end
  hs.status = "Suspended"
  hs.message = "Suspended for maintenance: workers scaled to zero"
  return hs
end

local workers = condition("WorkersAvailable")
if workers ~= nil and workers.status == "False" then
  hs.status = "Progressing"
  hs.message = status.phase .. ": " .. text(workers.message, "waiting for workers")
  return hs
end

local checks = condition("PreMarketChecks")
if checks ~= nil and checks.status == "False" then
  hs.status = "Progressing"
  hs.message = status.phase .. ": " .. text(checks.message, "pre-market checks failing")
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = status.phase
  if status.tradingState ~= nil then
    hs.message = hs.message .. ", trading " .. status.tradingState
  end
  return hs
end

if status.phase == "Initializing" or status.phase == "MarketClose" then
  hs.status = "Healthy"
  hs.message = status.phase .. ": outside trading hours"
  local nxt = status.nextTransition
  if nxt ~= nil and nxt.phase ~= nil and nxt.at ~= nil then
    hs.message = hs.message .. ", " .. nxt.phase .. " at " .. nxt.at
  end
  return hs
end

hs.status = "Progressing"
if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
  hs.message = status.phase .. ": " .. ready.message
else
  hs.message = status.phase .. ": waiting for the session to become ready"
end
return hs
