# A project's code layers (module `pg_sync.project`), prepared once per project version:
# the base context, then evaluation-context providers and core_code (trusted, they see
# `secrets`), then common_code (restricted). Public names of each layer reach the next
# and the task; task code itself is compiled once and executed per job.
import builtins as _builtins
import importlib.util as _importlib_util
import os as _os
import re as _re
import types as _types

from pg_sync import errors as _errors
from pg_sync import job as _job
from pg_sync import links as _links
from pg_sync import records as _records
from pg_sync import sandbox as _sandbox
from pg_sync import sync_helpers as _sync_helpers
from pg_sync import tools as _tools
from pg_sync.values import Magic, Namespace, Secrets

_NAME = _re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Names set before each job in every layer (their values depend on the job).
PER_JOB = ("trigger_name", "user", "texts")
# Never handed from one layer to the next.
PRIVATE = ("secrets", "MAGIC")

_current_project = None


def set_current(project):
    global _current_project
    _current_project = project


def current_env():
    if _current_project is None:
        raise RuntimeError("no job is running")
    return _current_project.env


def base_context(project):
    """The names every layer starts with (the task code reference lists them)."""
    t = _tools
    return {
        "env": project.env,
        "db": _records.DB,
        "params": project.params,
        "webhooks": project.webhooks,
        "texts": project.texts_for("en_US"),
        "trigger_name": None,
        "user": None,
        "log": _job.log,
        "log_transmission": _job.log_transmission,
        "log_response": _job.log_response,
        "LOG_DEBUG": _job.LOG_DEBUG,
        "LOG_INFO": _job.LOG_INFO,
        "LOG_WARNING": _job.LOG_WARNING,
        "LOG_ERROR": _job.LOG_ERROR,
        "LOG_CRITICAL": _job.LOG_CRITICAL,
        "add_job": _job.add_job,
        "set_link": _links.set_link,
        "search_links": _links.search_links,
        "get_link": _links.get_link,
        "sync_db2x": _sync_helpers.sync_db2x,
        "sync_x2db": _sync_helpers.sync_x2db,
        "sync_external": _sync_helpers.sync_external,
        "sync_odoo2x": _sync_helpers.sync_odoo2x,
        "sync_x2odoo": _sync_helpers.sync_x2odoo,
        "json": t.json,
        "time": t.time,
        "datetime": t.datetime,
        "dateutil": t.dateutil,
        "timezone": t.timezone,
        "b64encode": t.b64encode,
        "b64decode": t.b64decode,
        "url2base64": t.url2base64,
        "html2plaintext": t.html2plaintext,
        "type2str": t.type2str,
        "get_lang": t.get_lang,
        "DEFAULT_SERVER_DATETIME_FORMAT": t.DEFAULT_SERVER_DATETIME_FORMAT,
        "DEFAULT_SERVER_DATE_FORMAT": t.DEFAULT_SERVER_DATE_FORMAT,
        "UserError": _errors.UserError,
        "ValidationError": _errors.ValidationError,
        "RetryableJobError": _errors.RetryableJobError,
        "TimeLimitExceeded": _errors.TimeLimitExceeded,
        "JobCancelled": _errors.JobCancelled,
        "DatabaseError": _errors.DatabaseError,
        "OSError": OSError,
    }


class Providers:
    """Evaluation-context providers: `<name>.py` files in the operator's directories
    (eval_context_path, SYNC_WORKER_EVAL_CONTEXT_PATH), then the ones built into the worker. A provider defines
    `eval_context(secrets, context) -> dict`; it is trusted code."""

    def __init__(self, builtin, path):
        self.builtin = dict(builtin)
        self.path = list(path)
        self.loaded = {}

    def load(self, name):
        module = self.loaded.get(name)
        if module is not None:
            return module
        if not isinstance(name, str) or not _NAME.match(name):
            raise _errors.UserError("eval_context: %r is not a provider name" % (name,))
        for directory in self.path:
            file = _os.path.join(directory, name + ".py")
            if _os.path.isfile(file):
                spec = _importlib_util.spec_from_file_location("pg_sync_eval_context." + name, file)
                module = _importlib_util.module_from_spec(spec)
                spec.loader.exec_module(module)
                break
        else:
            source = self.builtin.get(name)
            if source is None:
                searched = ", ".join(self.path) or "no directories (eval_context_path / SYNC_WORKER_EVAL_CONTEXT_PATH is empty)"
                raise _errors.UserError(
                    "eval_context: no provider %r (searched %s; built in: %s)"
                    % (name, searched, ", ".join(sorted(self.builtin)) or "none")
                )
            module = _types.ModuleType("pg_sync_eval_context." + name)
            module.__file__ = "<eval_context %s>" % name
            exec(compile(source, module.__file__, "exec"), module.__dict__)
        if not callable(getattr(module, "eval_context", None)):
            raise _errors.UserError("eval_context: provider %r defines no eval_context(secrets, context)" % name)
        self.loaded[name] = module
        return module


def _exports(names, before, layer):
    """The public names a layer adds or changes."""
    out = {}
    for name, value in names.items():
        if name.startswith("_") or name in PRIVATE or name in PER_JOB:
            continue
        if name in before and before[name] is value:
            continue
        if isinstance(value, (_types.ModuleType, Secrets)):
            # A module leads to everything it imports; secrets stay in trusted layers.
            _job.log("%s: %r is not passed on to task code (%s)" % (layer, name, type(value).__name__), _job.LOG_DEBUG)
            continue
        out[name] = value
    return out


class Project:
    def __init__(self, data, providers):
        self.id = data["id"]
        self.name = data["name"]
        self.version = data["version"]
        # The project's default language (sync.project.lang).
        self.lang = data.get("lang") or "en_US"
        self.params = Namespace("params", data.get("params") or {})
        self._texts = {}
        for key, lang, value in data.get("texts") or []:
            self._texts.setdefault(lang, {})[key] = value
        self._texts_ns = {}
        base_url = (data.get("base_url") or "").rstrip("/")
        self.webhooks = Namespace(
            "webhooks", {name: "%s/sync/webhook/%s" % (base_url, token) for name, token in (data.get("webhooks") or {}).items()}
        )
        self.tasks = {int(k): (v["name"], v["code"]) for k, v in (data.get("tasks") or {}).items()}
        self.compiled = {}
        self.sources = {}
        self.env = _records.Environment()

        base = base_context(self)
        secrets = Secrets("secrets", data.get("secrets") or {})

        # Layer 1: evaluation-context providers (trusted).
        for name in data.get("eval_context") or []:
            helpers = providers.load(name).eval_context(secrets, _types.MappingProxyType(dict(base)))
            if helpers:
                base.update(_exports(dict(helpers), base, "eval_context %s" % name))

        # Layer 2: core_code (trusted, sees secrets).
        core = dict(base)
        core.update(__builtins__=_builtins, __name__="core_code", secrets=secrets)
        core["MAGIC"] = Magic(core)
        source = data.get("core_code") or ""
        self.sources["<core_code>"] = source
        exec(compile(source, "<core_code>", "exec"), core)
        after_core = dict(base)
        after_core.update(_exports(core, base, "core_code"))

        # Layer 3: common_code (restricted, no secrets).
        common = dict(after_core)
        common.update(__builtins__=_sandbox.safe_builtins(), __name__="common_code")
        common["MAGIC"] = Magic(common)
        source = data.get("common_code") or ""
        self.sources["<common_code>"] = source
        exec(_sandbox.compile_restricted(source, "<common_code>"), common)

        self.task_base = dict(after_core)
        self.task_base.update(_exports(common, after_core, "common_code"))
        self.task_base.update(__builtins__=_sandbox.safe_builtins(), __name__="task")
        self.layers = (core, common)

    def job_lang(self, lang):
        """The language a job runs in: its own (sync.job.lang), else the project's."""
        return lang or self.lang

    def texts_for(self, lang):
        """texts for a job in `lang`: a key missing there is taken from the project's
        language, then from en_US."""
        ns = self._texts_ns.get(lang)
        if ns is None:
            values = dict(self._texts.get("en_US", {}))
            values.update(self._texts.get(self.lang, {}))
            values.update(self._texts.get(lang, {}))
            ns = Namespace("texts", values)
            self._texts_ns[lang] = ns
        return ns

    def task_code(self, task_id):
        """The compiled code of a task (compiled once per project version)."""
        code = self.compiled.get(task_id)
        if code is None:
            task = self.tasks.get(task_id)
            if task is None:
                raise _errors.UserError("task %s is not part of project %s" % (task_id, self.name))
            name, source = task
            filename = "<task %s>" % name
            self.sources[filename] = source
            try:
                code = _sandbox.compile_restricted(source, filename)
            except (SyntaxError, _errors.SandboxError) as e:
                code = e
            self.compiled[task_id] = code
        if isinstance(code, BaseException):
            raise code.with_traceback(None)
        return code

    def task_name(self, task_id):
        task = self.tasks.get(task_id)
        return task[0] if task else str(task_id)

    def job_globals(self, info, lang):
        """Fresh globals for one job's task code; per-job names set in every layer."""
        per_job = {"trigger_name": info.get("trigger_name"), "user": info.get("user"), "texts": self.texts_for(lang)}
        for layer in self.layers:
            layer.update(per_job)
        g = dict(self.task_base)
        g.update(per_job)
        g["MAGIC"] = Magic(g)
        return g
