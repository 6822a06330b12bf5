# The stub package sync_worker/python/stubs (pg_sync_task: the task-code API for editors
# and type checkers) kept in step with the runtime, and the code we ship checked against
# it with mypy:
# - the names the worker puts in task code's globals (and core_code's, and each built-in
#   provider's) are exactly the names the stubs export, the classes behind them have the
#   same public members, and the library proxies (json, time, ...) the same attributes;
# - the package installs with pip and type-checks;
# - every code layer of the demo projects (sql/demo/*.json) and every task-code example of
#   the README and docs/*.md type-checks against the installed package (mypy), and passes
#   restricted execution's compile-time check.
import ast
import builtins
import importlib
import json
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
STUBS = ROOT / "sync_worker" / "python" / "stubs"
RUNTIME = ROOT / "sync_worker" / "python" / "pg_sync"
PROVIDERS = ROOT / "sync_worker" / "python" / "eval_context"
DEMOS = ROOT / "sql" / "demo"
DOCS = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))

try:
    import mypy.build
    import mypy.modulefinder
    import mypy.nodes
    import mypy.options
    import mypy.types
except ImportError:  # pragma: no cover - a machine set up without scripts/lib.sh
    pytest.fail("mypy is missing: apt-get install mypy (scripts/lib.sh ensure_apt_packages)", pytrace=False)

# Names docs examples take as given (fragments about a record or a link set someone
# already has), with the type they stand for; used only where the example does not bind them.
DOC_PLACEHOLDERS = {
    "docs/task-code.md": {"record": "Records", "records": "Records", "other": "Records", "a": "Links", "b": "Links"},
    "docs/providers.md": {"issue": "Any"},
}
# The bodies of unannotated functions (all of task code) are checked too; a layer passes
# on to the next only the names it defines, as the worker does (not what it imported).
MYPY_FLAGS = ["--check-untyped-defs", "--no-implicit-reexport", "--show-error-codes", "--no-error-summary", "--no-color-output"]


# -- the runtime's side ----------------------------------------------------------------------


def _import_runtime():
    # The worker loads every file of the package, and classes move between files (Row
    # went from records.py to db.py): they are looked up by name across all of them.
    for path in sorted(RUNTIME.glob("*.py")):
        importlib.import_module("pg_sync." + path.stem)
    return [m for name, m in sorted(sys.modules.items()) if name.startswith("pg_sync.") and name != "pg_sync._native"]


def _prepare(eval_context=()):
    """A project prepared as the worker prepares it (runner.prepare), with the built-in
    providers and no secrets: providers build their clients lazily."""
    from pg_sync import job, project

    _import_runtime()
    builtin = {p.stem: p.read_text(encoding="utf-8") for p in PROVIDERS.glob("*.py")}
    data = {"id": 1, "name": "stubs", "version": 1, "eval_context": list(eval_context)}
    prepared = project.Project(data, project.Providers(builtin, []))
    # Lines logged while layers are prepared wait for the next job: not another test's.
    job.start({})
    job.stop()
    return prepared


def _public(names):
    return {n for n in names if not n.startswith("_")}


def _task_globals(prepared):
    return prepared.job_globals({"trigger_name": "T", "user": "u"}, "en_US")


def builtin_provider_names():
    return sorted(p.stem for p in PROVIDERS.glob("*.py"))


@pytest.fixture(scope="module")
def runtime():
    base = _prepare()
    task = _task_globals(base)
    providers = {}
    for name in builtin_provider_names():
        g = _task_globals(_prepare([name]))
        providers[name] = {n: g[n] for n in _public(g) - _public(task)}
    return {
        "task": {n: task[n] for n in _public(task)},
        "core": _public(base.layers[0]),
        "providers": providers,
    }


def _is_real_builtin(cls):
    # Error classes claim __module__ = "builtins" for short messages: only the real ones count.
    return getattr(builtins, cls.__name__, None) is cls


def _runtime_members(cls):
    names = set()
    for base in cls.__mro__:
        if not _is_real_builtin(base):
            names |= _public(vars(base))
    if issubclass(cls, BaseException):
        try:
            names |= _public(vars(cls("message")))  # attributes set by __init__
        except TypeError:
            pass
    return names


def _runtime_classes(runtime):
    found = {}
    for module in _import_runtime():
        for value in vars(module).values():
            if isinstance(value, type) and not _is_real_builtin(value):
                found.setdefault(value.__name__, set()).add(value)
    for names in [runtime["task"]] + list(runtime["providers"].values()):
        for value in names.values():
            cls = value if isinstance(value, type) else type(value)
            if not _is_real_builtin(cls):
                found.setdefault(cls.__name__, set()).add(cls)
    return found


# -- the stubs' side: what mypy reads from them ------------------------------------------------


def _stub_modules(root):
    out = []
    for path in sorted((root / "pg_sync_task").rglob("*.pyi")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append((".".join(parts), path))
    return out


@pytest.fixture(scope="module")
def stubs():
    options = mypy.options.Options()
    options.mypy_path = [str(STUBS)]
    options.incremental = False
    options.cache_dir = "/dev/null"
    options.python_version = sys.version_info[:2]
    sources = [mypy.modulefinder.BuildSource(str(path), name, None) for name, path in _stub_modules(STUBS)]
    result = mypy.build.build(sources, options)
    return result


def _exports(stubs, module):
    tree = stubs.files[module]
    return {n: node for n, node in tree.names.items() if node.module_public and not n.startswith("_")}


def _stub_classes(stubs):
    tree = stubs.files["pg_sync_task.types"]
    return {
        n: node.node
        for n, node in tree.names.items()
        if isinstance(node.node, mypy.nodes.TypeInfo) and node.node.fullname == "pg_sync_task.types." + n and not n.startswith("_")
    }


def _stub_members(info):
    names = set()
    for base in info.mro:
        if base.fullname.startswith("pg_sync_task."):
            names |= _public(base.names)
    return names


def _difference(what, runtime_names, stub_names):
    missing = sorted(set(runtime_names) - set(stub_names))
    extra = sorted(set(stub_names) - set(runtime_names))
    lines = []
    if missing:
        lines.append("%s: the runtime provides %s, the stubs do not declare %s" % (what, ", ".join(missing), "it" if len(missing) == 1 else "them"))
    if extra:
        lines.append("%s: the stubs declare %s, the runtime does not provide %s" % (what, ", ".join(extra), "it" if len(extra) == 1 else "them"))
    return lines


# -- (b) the stubs and the runtime agree ---------------------------------------------------------


def test_the_stubs_type_check(stubs):
    assert stubs.errors == [], "\n".join(stubs.errors)


def test_task_code_names_are_the_runtimes(runtime, stubs):
    problems = _difference("task code (pg_sync_task)", runtime["task"], _exports(stubs, "pg_sync_task"))
    assert not problems, "\n".join(problems)


def test_core_code_names_are_the_runtimes(runtime, stubs):
    problems = _difference("core_code (pg_sync_task.core)", runtime["core"], _exports(stubs, "pg_sync_task.core"))
    assert not problems, "\n".join(problems)


def test_every_builtin_provider_has_its_stub_module_with_its_names(runtime, stubs):
    modules = {m.rsplit(".", 1)[1] for m in stubs.files if m.startswith("pg_sync_task.providers.")}
    problems = _difference("built-in providers (pg_sync_task.providers.*)", runtime["providers"], modules)
    for name, names in sorted(runtime["providers"].items()):
        if name in modules:
            problems += _difference("provider %s (pg_sync_task.providers.%s)" % (name, name), names, _exports(stubs, "pg_sync_task.providers." + name))
    assert not problems, "\n".join(problems)


def _declared_class(node):
    """(stub class name, declared as the class itself) when a name is a class of the stubs
    or an instance of one; (None, None) for functions, modules and plain values."""
    target = node.node
    if isinstance(target, mypy.nodes.TypeInfo):
        return target.name, True
    if isinstance(target, mypy.nodes.Var) and isinstance(target.type, mypy.types.Instance):
        if target.type.type.fullname.startswith("pg_sync_task."):
            return target.type.type.name, False
    return None, None


def test_names_are_declared_with_the_runtimes_classes(runtime, stubs):
    problems = []
    pairs = [(runtime["task"], _exports(stubs, "pg_sync_task"))]
    pairs += [(names, _exports(stubs, "pg_sync_task.providers." + p)) for p, names in runtime["providers"].items()]
    for names, exports in pairs:
        for name, value in sorted(names.items()):
            declared, is_class = _declared_class(exports[name]) if name in exports else (None, None)
            if declared is None:
                continue
            actual = value if isinstance(value, type) else type(value)
            if is_class != isinstance(value, type) or actual.__name__ != declared:
                problems.append(
                    "%s: the stubs declare %s %s, the runtime has %s %s"
                    % (name, "the class" if is_class else "an instance of", declared, "the class" if isinstance(value, type) else "an instance of", actual.__name__)
                )
    assert not problems, "\n".join(problems)


def test_classes_have_the_runtimes_public_members(runtime, stubs):
    found = _runtime_classes(runtime)
    problems = []
    for name, info in sorted(_stub_classes(stubs).items()):
        if info.typeddict_type is not None:
            continue  # a plain dict at run time
        classes = found.get(name, set())
        if len(classes) != 1:
            problems.append("class %s: %s in the runtime" % (name, "not found" if not classes else "%d different classes of that name" % len(classes)))
            continue
        problems += _difference("class %s" % name, _runtime_members(classes.pop()), _stub_members(info))
    # The other way round: every object or class handed to code has a stub class.
    stub_classes = _stub_classes(stubs)
    for names in [runtime["task"]] + list(runtime["providers"].values()):
        for key, value in names.items():
            cls = value if isinstance(value, type) else type(value)
            if callable(value) and not isinstance(value, type) or _is_real_builtin(cls) or cls.__name__ == "LibraryProxy":
                continue
            if cls.__name__ not in stub_classes:
                problems.append("%s is a %s, a class pg_sync_task.types does not declare" % (key, cls.__name__))
    assert not problems, "\n".join(sorted(set(problems)))


def _proxy_problems(what, proxy, stubs, module):
    exports = _exports(stubs, module)
    problems = _difference("%s (%s)" % (what, module), dir(proxy), exports)
    for attr in sorted(set(dir(proxy)) & set(exports)):
        value = getattr(proxy, attr)
        target = exports[attr].node
        if type(value).__name__ == "LibraryProxy":
            if not isinstance(target, mypy.nodes.MypyFile):
                problems.append("%s.%s: a library at run time, not a module in the stubs" % (what, attr))
            else:
                problems += _proxy_problems("%s.%s" % (what, attr), value, stubs, target.fullname)
    return problems


def test_libraries_offer_the_runtimes_attributes(runtime, stubs):
    exports = _exports(stubs, "pg_sync_task")
    problems = []
    for name, value in sorted(runtime["task"].items()):
        if type(value).__name__ != "LibraryProxy":
            continue
        target = exports[name].node if name in exports else None
        if not isinstance(target, mypy.nodes.MypyFile):
            problems.append("%s: a library at run time, not a module in the stubs" % name)
            continue
        problems += _proxy_problems(name, value, stubs, target.fullname)
    assert not problems, "\n".join(problems)


def test_ruff_builtins_are_every_task_code_name(runtime):
    text = (STUBS / "ruff.toml").read_text(encoding="utf-8")
    listed = set(re.findall(r'"([A-Za-z_][A-Za-z0-9_]*)"', re.search(r"builtins\s*=\s*\[(.*?)\]", text, re.S).group(1)))
    expected = set(runtime["task"]).union(*runtime["providers"].values())
    problems = _difference("ruff.toml builtins", expected, listed)
    assert not problems, "\n".join(problems) + "\nexpected: builtins = %s" % json.dumps(sorted(expected))


# -- the package installs -------------------------------------------------------------------------


def _run(cmd, **kwargs):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, "%s failed (%d):\n%s%s" % (" ".join(map(str, cmd)), proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A virtualenv (seeing the system's packages: mypy, the dateutil and pytz stubs) with
    the stub package installed by pip from a copy of the folder (an in-tree build would
    leave build/ behind). Offline: no build isolation, no dependencies fetched."""
    tmp = tmp_path_factory.mktemp("stubs")
    src = tmp / "src"
    shutil.copytree(STUBS, src, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", tmp / "venv"])
    python = tmp / "venv" / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", src])
    site = pathlib.Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    return {"tmp": tmp, "python": python, "site": site}


def test_pip_installs_every_stub_file(installed):
    def files(root):
        return sorted(str(p.relative_to(root)) for p in (root / "pg_sync_task").rglob("*") if p.suffix in (".pyi", ".typed"))

    assert files(installed["site"]) == files(STUBS)


# -- (a) the shipped code type-checks against the installed stubs ------------------------------


def _identifier(text):
    return re.sub(r"\W", "_", text).strip("_") or "x"


def _demo_sources(path):
    """(layer, name, code, where) of a demo project: core_code, common_code, each task."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    src = DEMOS / "src" / path.stem
    spec = json.loads((src / "project.json").read_text(encoding="utf-8")) if (src / "project.json").is_file() else {}

    def where(key, task=None):
        entry = spec.get(key) if task is None else next((t.get("code") for t in spec.get("tasks", []) if t.get("name") == task), None)
        shown = "sql/demo/%s %s" % (path.name, key if task is None else "task %s" % task)
        if isinstance(entry, dict) and "file" in entry:
            shown += " (sql/demo/src/%s/%s)" % (path.stem, entry["file"])
        return shown

    yield "core", "core_code", doc.get("core_code") or "", where("core_code")
    yield "common", "common_code", doc.get("common_code") or "", where("common_code")
    for i, task in enumerate(doc.get("tasks") or []):
        yield "task", "task_%d_%s" % (i, _identifier(task["name"])), task["code"], where("tasks", task["name"])


def _doc_examples(path):
    """(code, first line number) of the task-code examples of a Markdown page: Python
    blocks that neither import (task code cannot) nor define a provider, and the
    dollar-quoted code of SQL blocks that write sync.task."""
    lines = path.read_text(encoding="utf-8").split("\n")
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        body = "\n".join(lines[i + 1 : end])
        if m.group(1) == "python":
            tree = ast.parse(body)
            imports = any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(tree))
            if not imports and "def eval_context(" not in body:
                yield body, i + 2
        elif m.group(1) == "sql":
            for q in re.finditer(r"\$\$(.*?)\$\$", body, re.S):
                if "sync.task" in body[: q.start()]:
                    yield q.group(1), i + 2 + body[: q.start(1)].count("\n")
        i = end + 1


def _bound_names(tree):
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
    return names


def _loaded_names(tree):
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _star(modules):
    return "; ".join("from %s import *" % m for m in modules)


def _write_check_tree(root):
    """One package per demo project and per page with examples, one module per code layer
    or example, each behind a one-line header of star imports standing for the names the
    worker injects. Returns {file: (shown location, first code line of the original)} and
    the sources for the restricted-execution check."""
    origins, restricted = {}, []
    every_provider = ["pg_sync_task.providers." + p for p in builtin_provider_names()]

    def write(package, module, header, code, where, first_line):
        (root / package).mkdir(exist_ok=True)
        (root / package / "__init__.py").touch()
        (root / package / (module + ".py")).write_text(header + "\n" + code, encoding="utf-8")
        origins["%s/%s.py" % (package, module)] = (where, first_line)

    for path in sorted(DEMOS.glob("*.json")):
        package = "demo_" + _identifier(path.stem)
        providers = ["pg_sync_task.providers." + p for p in json.loads(path.read_text(encoding="utf-8")).get("eval_context") or []]
        for layer, module, code, where in _demo_sources(path):
            if layer == "core":
                header = _star(["pg_sync_task.core"] + providers)
            elif layer == "common":
                header = _star(["pg_sync_task"] + providers + [".core_code"])
            else:
                header = _star(["pg_sync_task"] + providers + [".core_code", ".common_code"])
            write(package, module, header, code, where, 1)
            if layer != "core":
                restricted.append((where, code, 1))
    for path in DOCS:
        shown = str(path.relative_to(ROOT))
        given = DOC_PLACEHOLDERS.get(shown, {})
        for n, (code, first) in enumerate(_doc_examples(path)):
            tree = ast.parse(code)
            needed = sorted(name for name in given if name in _loaded_names(tree) and name not in _bound_names(tree))
            header = _star(["pg_sync_task"] + every_provider) + "; from typing import Any; from pg_sync_task import types as _t"
            header += "".join("; %s: %s" % (name, given[name] if given[name] == "Any" else "_t." + given[name]) for name in needed)
            write("doc_" + _identifier(path.stem), "example_%d_line_%d" % (n, first), header, code, shown, first)
            restricted.append((shown, code, first))
    # Proof that the run reports what it should: two errors, on lines 1 and 2 of its code.
    write("canary", "task", _star(["pg_sync_task"]), "db.no_such_method()\nundefined_name_in_task_code\n", "canary", 1)
    return origins, restricted


@pytest.fixture(scope="module")
def checked(installed):
    root = installed["tmp"] / "check"
    root.mkdir()
    origins, restricted = _write_check_tree(root)
    packages = sorted({f.split("/")[0] for f in origins})
    cache = installed["tmp"] / "mypy_cache"
    proc = subprocess.run(
        [str(installed["python"]), "-m", "mypy", "--cache-dir", str(cache)] + MYPY_FLAGS + packages,
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert proc.returncode in (0, 1), "mypy did not run:\n%s%s" % (proc.stdout, proc.stderr)
    errors = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"^(.+?\.py):(\d+): (error|note): (.*)$", line)
        if not m:
            continue
        if m.group(1) not in origins:
            # Notes point into the stubs ("defined here"); errors there would be the stubs'.
            if m.group(3) == "error":
                errors.setdefault("elsewhere", []).append(line)
            continue
        where, first = origins[m.group(1)]
        n = int(m.group(2))
        place = "%s, the injected names (header)" % where if n == 1 else "%s:%d" % (where, first + n - 2)
        errors.setdefault(where.split(" ")[0], []).append("%s: %s: %s" % (place, m.group(3), m.group(4)))
    return {"errors": errors, "restricted": restricted, "origins": origins, "output": proc.stdout}


def test_the_check_reports_errors(checked):
    canary = checked["errors"].get("canary", [])
    assert [e.split(": error: ")[0] for e in canary] == ["canary:1", "canary:2"], checked["output"]
    assert '"Database" has no attribute "no_such_method"' in canary[0]
    assert 'Name "undefined_name_in_task_code" is not defined' in canary[1]
    assert "elsewhere" not in checked["errors"], "\n".join(checked["errors"]["elsewhere"])


def test_demo_projects_type_check(checked):
    assert any(w.startswith("sql/demo/") for w, _ in checked["origins"].values())
    errors = [e for where, lines in sorted(checked["errors"].items()) if where.startswith("sql/demo/") for e in lines]
    assert not errors, "\n".join(errors)


def test_docs_examples_type_check(checked):
    assert any(w.startswith("docs/") for w, _ in checked["origins"].values())
    errors = [e for where, lines in sorted(checked["errors"].items()) if not where.startswith(("sql/demo/", "canary")) for e in lines]
    assert not errors, "\n".join(errors)


def test_demo_and_docs_code_passes_restricted_execution(checked, runtime):
    # mypy knows every builtin; restricted code gets a subset (no print, open, type...).
    from pg_sync import sandbox
    from pg_sync.errors import SandboxError

    available = set(sandbox.safe_builtins()) | set(runtime["task"]).union(*runtime["providers"].values())
    problems = []
    for where, code, first in checked["restricted"]:
        try:
            sandbox.compile_restricted(code, where)
        except (SyntaxError, SandboxError) as e:
            problems.append("%s (first line %d): %s" % (where, first, e))
            continue
        tree = ast.parse(code)
        for name in sorted((_loaded_names(tree) - _bound_names(tree) - available) & set(dir(builtins))):
            problems.append("%s (first line %d): uses %s, which restricted execution does not provide" % (where, first, name))
    assert not problems, "\n".join(problems)
