"""Backups of a session: the trade journal, Redis, model artifacts and the resources (``trading-platform backup``).

The operator turns a Backup into a Job/CronJob that runs ``backup run``; the
run writes ``<root>/<backup>/<run-id>/`` with a manifest (sizes, sha256s),
verifies it by a scratch restore, prunes by retention and reports into the
Backup's status. ``backup restore`` puts a halted session's journal rows and
Redis keys back. Modules: ``postgres`` (journal), ``redis_rdb`` (Redis),
``files`` (models, resources), ``manifest``, ``retention``, ``status``,
``runner`` (the commands), ``cli``. Runbook: docs/backup.md.
"""
