"""Run Argo CD resource-customization Lua scripts the way Argo CD does, under Lua 5.1 (lupa).

Argo CD (util/lua) runs each script in gopher-lua (Lua 5.1) with only the
base, table and package libraries and a "safe" os (time, date, clock) — no
string library, so ``s:find(...)`` would fail there. The object is the
global ``obj``, decoded from the resource's JSON; the script's return value
is encoded back to JSON. This module rebuilds that sandbox in real Lua 5.1:
a fresh environment with only those globals, and the string metatable
removed while the script runs.

Test-case files are read as Argo CD reads them (sigs.k8s.io/yaml converts
YAML to JSON first, so timestamps stay strings).
"""

from __future__ import annotations

import pathlib
from typing import Any

import yaml

try:
    from lupa import lua51 as _lupa
except ImportError:  # lupa built without the versioned modules: its default runtime is Lua 5.x
    import lupa as _lupa  # type: ignore[no-redef]

#: Argo CD's valid health codes (anything else becomes Unknown).
HEALTH_CODES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
INVALID_HEALTH = "Lua returned an invalid health status"

_BASE = ["assert", "error", "ipairs", "next", "pairs", "pcall", "print", "rawequal", "rawget", "rawset",
         "select", "tonumber", "tostring", "type", "unpack", "xpcall", "getmetatable", "setmetatable", "_VERSION"]

_RUNNER = """
local base, script, name, object, params = ...
local env = {}
for _, k in ipairs(base) do env[k] = _G[k] end
env._G = env
env.table = {}
for k, v in pairs(table) do env.table[k] = v end
env.os = {time = os.time, date = os.date, clock = os.clock}
env.obj = object
-- Argo CD 3.1+ sets the global actionParams (a table, empty without parameters); older releases do not.
env.actionParams = params
local fn, err = loadstring(script, name)
if fn == nil then error(err, 0) end
setfenv(fn, env)
-- Argo CD's gopher-lua has no string library, so strings have no methods either.
local strmeta = debug.getmetatable("")
debug.setmetatable("", nil)
local ok, result = pcall(fn)
debug.setmetatable("", strmeta)
if not ok then error(result, 0) end
return result
"""


class _JsonishLoader(yaml.SafeLoader):
    """YAML as sigs.k8s.io/yaml reads it: no timestamp type."""


_JsonishLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_yaml(path: pathlib.Path) -> Any:
    return yaml.load(path.read_text(), Loader=_JsonishLoader)  # a SafeLoader subclass


class Sandbox:
    """One Lua 5.1 runtime; ``run`` executes a script with ``obj`` set, in Argo CD's restricted globals."""

    def __init__(self) -> None:
        self.lua = _lupa.LuaRuntime(unpack_returned_tuples=False)
        assert self.lua.eval("_VERSION") == "Lua 5.1", self.lua.eval("_VERSION")
        self._runner = self.lua.execute("return function(...) " + _RUNNER + " end")
        self._base = self._to_lua(_BASE)

    def _to_lua(self, value: Any) -> Any:
        if isinstance(value, dict):
            table = self.lua.table()
            for k, v in value.items():
                if v is not None:  # JSON null decodes to nil
                    table[k] = self._to_lua(v)
            return table
        if isinstance(value, list):
            table = self.lua.table()
            for i, v in enumerate(value, 1):
                table[i] = self._to_lua(v)
            return table
        return value

    def to_python(self, value: Any, like: Any = None) -> Any:
        """Lua -> JSON-like Python. An empty table takes the type the input had at the same place
        (Argo CD does the same when it re-encodes an action's result)."""
        if self.lua.eval("type")(value) != "table":
            if isinstance(value, float) and value.is_integer():
                return int(value)
            return value
        keys = list(value.keys())
        if not keys:
            return [] if isinstance(like, list) else {}
        if all(isinstance(k, int) for k in keys) and sorted(keys) == list(range(1, len(keys) + 1)):
            items = like if isinstance(like, list) else []
            return [self.to_python(value[i], items[i - 1] if i - 1 < len(items) else None)
                    for i in range(1, len(keys) + 1)]
        ref = like if isinstance(like, dict) else {}
        return {str(k): self.to_python(value[k], ref.get(str(k))) for k in keys}

    def run(self, script: str, obj: dict[str, Any], name: str = "script",
            params: dict[str, str] | None = None) -> Any:
        lua_params = None if params is None else self._to_lua(params)
        return self._runner(self._base, script, name, self._to_lua(obj), lua_params)

    # ------------------------------------------------------------------ Argo CD's three entry points

    def health(self, script: str, obj: dict[str, Any]) -> dict[str, str]:
        result = self.to_python(self.run(script, obj, "health.lua"))
        if not isinstance(result, dict):
            raise TypeError(f"expect table output from Lua script, not {type(result).__name__}")
        status = {"status": result.get("status", ""), "message": result.get("message", "")}
        if status["status"] not in HEALTH_CODES:
            return {"status": "Unknown", "message": INVALID_HEALTH}
        return status

    def discovery(self, script: str, obj: dict[str, Any]) -> list[dict[str, Any]]:
        result = self.to_python(self.run(script, obj, "discovery.lua"))
        actions = []
        for action_name, props in (result or {}).items():
            entry = {"name": action_name, **{k: v for k, v in (props or {}).items()}}
            entry.setdefault("disabled", False)
            actions.append(entry)
        return actions

    def action(self, script: str, obj: dict[str, Any], params: dict[str, str] | None = None) -> dict[str, Any]:
        """``params``: the action's parameters as Argo CD 3.1+ passes them (the global ``actionParams``,
        a table of strings); None runs the script as an older Argo CD does, without that global."""
        result = self.to_python(self.run(script, obj, "action.lua", params), like=obj)
        if not isinstance(result, dict):
            raise TypeError(f"expect table output from Lua script, not {type(result).__name__}")
        return result
