-- Actions Argo CD offers on a TradingSession: halt (the user's switch) and resume.
-- resume is offered for a user halt (spec.halted) and for an automatic halt latched in status
-- that spec.resumeHaltId does not name yet.
local actions = {}
-- halt takes one parameter, the reason (Argo CD 3.1 and later show an input for it; earlier
-- releases ignore params and the action records "Halted from Argo CD").
actions["halt"] = {["disabled"] = false, ["iconClass"] = "fa fa-fw fa-hand-paper", ["displayName"] = "Halt trading",
  ["params"] = {{["name"] = "reason"}}}
actions["resume"] = {["disabled"] = true, ["iconClass"] = "fa fa-fw fa-play", ["displayName"] = "Resume trading"}

local userHalted = obj.spec ~= nil and obj.spec.halted == true
local halt = nil
if obj.status ~= nil then
  halt = obj.status.halt
end
local automatic = halt ~= nil and halt.active == true and halt.source ~= nil and halt.source ~= "User" and halt.id ~= nil
local resumable = automatic and (obj.spec == nil or obj.spec.resumeHaltId ~= halt.id)

if userHalted then
  actions["halt"]["disabled"] = true
end
if userHalted or resumable then
  actions["resume"]["disabled"] = false
end
return actions
