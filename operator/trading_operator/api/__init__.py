"""The contract: pydantic models of the three custom resources and the phase table.

Everything else (the CRD YAML, the operator's reconcilers, the workers)
derives from these models; nothing hand-writes a schema.
"""

from trading_operator.api.backup import Backup, BackupSpec, BackupStatus
from trading_operator.api.common import API_VERSION, GROUP, VERSION, Condition
from trading_operator.api.phases import Phase, can_transition, check_transition
from trading_operator.api.riskpolicy import RiskPolicy, RiskPolicySpec, RiskPolicyStatus
from trading_operator.api.session import Role, TradingSession, TradingSessionSpec, TradingSessionStatus

__all__ = [
    "API_VERSION", "GROUP", "VERSION", "Backup", "BackupSpec", "BackupStatus", "Condition", "Phase",
    "RiskPolicy", "RiskPolicySpec", "RiskPolicyStatus", "Role", "TradingSession", "TradingSessionSpec",
    "TradingSessionStatus", "can_transition", "check_transition",
]
