# The names each built-in evaluation-context provider adds, one module per provider:
# `from pg_sync_task.providers.github import *` for a project whose eval_context lists github.
