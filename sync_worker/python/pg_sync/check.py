# Code check (module `pg_sync.check`): compiles each code layer of a project document the
# way the executor will, without running any of it, and says where each layer fails.

from pg_sync import sandbox as _sandbox
from pg_sync.errors import SandboxError

def _problem(layer, line, column, message):
    return {"layer": layer, "line": line, "column": column, "message": message}

def check_layer(layer, source, restricted):
    """Problems of one layer: [] when it compiles. Restricted layers (common_code, task
    code) also get the sandbox's checks; trusted ones (core_code) only Python's."""
    if not isinstance(source, str):
        return [_problem(layer, None, None, "code must be a string")]
    try:
        if restricted:
            _sandbox.compile_restricted(source, layer)
        else:
            compile(source, layer, "exec", dont_inherit=True)
    except SyntaxError as e:
        return [_problem(layer, e.lineno, e.offset, e.msg)]
    except SandboxError as e:
        message = str(e)
        prefix = "%s, line %s: " % (layer, getattr(e, "lineno", "?"))
        if message.startswith(prefix):
            message = message[len(prefix):]
        return [_problem(layer, getattr(e, "lineno", None), None, message)]
    except (ValueError, RecursionError, MemoryError) as e:
        # NUL bytes, absurdly deep nesting: Python refuses before any line is known.
        return [_problem(layer, None, None, "%s: %s" % (type(e).__name__, e))]
    return []

def check_document(doc):
    """Problems of every layer of a project document (as `sync_worker export` writes it):
    core_code, common_code and each task's code, in that order."""
    if not isinstance(doc, dict):
        return [_problem("<document>", None, None, "a project document is a JSON object")]
    problems = []
    problems += check_layer("<core_code>", doc.get("core_code") or "", False)
    problems += check_layer("<common_code>", doc.get("common_code") or "", True)
    tasks = doc.get("tasks") or []
    if not isinstance(tasks, list):
        return problems + [_problem("<document>", None, None, "tasks must be a list")]
    for task in tasks:
        if not isinstance(task, dict):
            problems.append(_problem("<document>", None, None, "each task must be an object"))
            continue
        problems += check_layer("<task %s>" % task.get("name"), task.get("code") or "", True)
    return problems
