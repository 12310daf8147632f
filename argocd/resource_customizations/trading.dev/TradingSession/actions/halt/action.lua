-- Halt: the user's halt switch, exactly what
--   kubectl trading halt NAME --reason "..."
--   (kubectl patch tradingsession NAME --type=merge -p '{"spec":{"halted":true,"haltReason":"..."}}')
-- does. Executors stop sending orders as soon as they see it.
-- The reason is the action's parameter "reason" (Argo CD 3.1 and later ask for it; the global
-- actionParams does not exist before 3.1): an empty or missing one records "Halted from Argo CD".
-- A halted session keeps the reason it was halted with.
local reason = nil
if actionParams ~= nil and actionParams["reason"] ~= nil and actionParams["reason"] ~= "" then
  reason = actionParams["reason"]
end
if reason ~= nil and #reason > 256 then
  error("reason: at most 256 characters (spec.haltReason), got " .. tostring(#reason), 0)
end
if obj.spec.halted ~= true then
  obj.spec.haltReason = reason or "Halted from Argo CD"
end
obj.spec.halted = true
return obj
