-- Resume: clear the user's halt switch and, for an automatic halt (source Risk, Policy or
-- Operator, latched in status), name the halt being cleared in spec.resumeHaltId, so a stale
-- command can never clear a newer halt. The operator still refuses to resume until workers are
-- ready and risk is back within limits (a condition says what blocks it).
obj.spec.halted = false
obj.spec.haltReason = nil
if obj.status ~= nil and obj.status.halt ~= nil then
  local halt = obj.status.halt
  if halt.active == true and halt.source ~= nil and halt.source ~= "User" and halt.id ~= nil then
    obj.spec.resumeHaltId = halt.id
  end
end
return obj
