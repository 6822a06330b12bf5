# pytest for the task-code runtime's pure-Python parts (sync_worker/python/pg_sync), run
# by scripts/test.sh with the interpreter the worker embeds: no database, no worker.
#
# The worker loads those files as the package `pg_sync` next to its native module
# `pg_sync._native` (Rust). Here the package is the same files, and `_native` a stand-in
# whose database functions refuse: what these tests cover must not touch PostgreSQL
# (test_records.py puts a fake in their place that records the SQL and answers rows).
import http.server
import pathlib
import sys
import threading
import types

import pytest

PY = pathlib.Path(__file__).resolve().parents[2] / "sync_worker" / "python" / "pg_sync"

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


# -- fixtures shared by the tests -------------------------------------------------------


@pytest.fixture()
def serve():
    """serve(handler_class) -> the base URL of a local HTTP server, stopped after the test."""
    servers = []

    def start(handler):
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(srv)
        return "http://127.0.0.1:%d" % srv.server_address[1]

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.fixture()
def logs():
    """The log lines of a job running for the test: (level, kind, recipient, message, at)."""
    from pg_sync import job

    state = job.start({"lang": "en_US"})
    yield state.logs
    job.stop()
