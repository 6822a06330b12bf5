# What core_code sees: every name of task code, plus `secrets` (core_code is trusted and
# written by admins; secrets never reach common_code or tasks).
from pg_sync_task import *
from pg_sync_task.types import Secrets

secrets: Secrets
"""sync.project_secret values: `secrets.KEY`, `secrets.get('KEY')`."""
