-- Halt: the user's halt switch, exactly what
--   kubectl patch tradingsession NAME --type=merge -p '{"spec":{"halted":true,"haltReason":"..."}}'
-- does. Executors stop sending orders as soon as they see it.
if obj.spec.halted ~= true then
  obj.spec.haltReason = "Halted from Argo CD"
end
obj.spec.halted = true
return obj
