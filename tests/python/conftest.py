# pytest for the task-code runtime's pure-Python parts (sync_worker/src/python/py), run
# by scripts/test.sh with the interpreter the worker embeds: no database, no worker.
#
# The worker loads those files as the package `pg_sync` next to its native module
# `pg_sync._native` (Rust). Here the package is the same files, and `_native` a stand-in
# whose database functions refuse: what these tests cover must not touch PostgreSQL.
import pathlib
import sys
import types

PY = pathlib.Path(__file__).resolve().parents[2] / "sync_worker" / "src" / "python" / "py"

package = types.ModuleType("pg_sync")
package.__path__ = [str(PY)]
sys.modules["pg_sync"] = package

native = types.ModuleType("pg_sync._native")


class DatabaseError(Exception):
    code = None
    hint = None


def _no_database(*_args, **_kwargs):
    raise DatabaseError("no database in the Python unit tests")


native.DatabaseError = DatabaseError
native.query = native.execute = native.savepoint = _no_database
sys.modules["pg_sync._native"] = native
package._native = native
