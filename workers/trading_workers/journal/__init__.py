"""The trade journal: PostgreSQL through asyncpg, with versioned SQL migrations (see ``store`` and ``migrate``)."""

from trading_workers.journal.migrate import migrate, migrations
from trading_workers.journal.store import Counts, Journal, PnlSnapshot

__all__ = ["Counts", "Journal", "PnlSnapshot", "migrate", "migrations"]
