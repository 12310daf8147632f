-- Argo CD health of a RiskPolicy (trading.dev/v1alpha1).
-- Runs in Argo CD's sandbox: base, table and a safe os library only (no string library).
--   spec not yet validated by the operator -> Progressing
--   Valid=False                            -> Degraded, with the validation message
--   mode Halted (the kill switch)          -> Suspended
--   Valid=True                             -> Healthy (mode Reducing says so in the message)
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

local generation = obj.metadata.generation
local observed = nil
if obj.status ~= nil then
  observed = obj.status.observedGeneration
end
if observed == nil or (generation ~= nil and observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to validate the policy"
  return hs
end

local valid = condition("Valid")
if valid == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to validate the policy"
  return hs
end
if valid.status ~= "True" then
  hs.status = "Degraded"
  if valid.message ~= nil and valid.message ~= "" then
    hs.message = "Invalid: " .. valid.message
  else
    hs.message = "Invalid"
  end
  return hs
end

local count = obj.status.sessionCount or 0
local mode = "Active"
if obj.spec ~= nil and obj.spec.mode ~= nil then
  mode = obj.spec.mode
end
if mode == "Halted" then
  hs.status = "Suspended"
  hs.message = "Kill switch on: " .. tostring(count) .. " session(s) halted"
  return hs
end
hs.status = "Healthy"
if mode == "Reducing" then
  hs.message = "Reducing: " .. tostring(count) .. " session(s) may only reduce exposure"
else
  hs.message = "Active: used by " .. tostring(count) .. " session(s)"
end
return hs
