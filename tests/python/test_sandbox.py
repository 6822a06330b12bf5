# The sandbox's rules for common code and task code: what compiles, what is refused.
import pytest

from pg_sync import sandbox
from pg_sync.errors import SandboxError


def run(source, **names):
    code = sandbox.compile_restricted(source, "<test>")
    env = {"__builtins__": sandbox.safe_builtins(), **names}
    exec(code, env)
    return env


def test_ordinary_code_runs():
    env = run("def f(xs):\n    return sorted(x * 2 for x in xs)\nr = f([3, 1, 2])")
    assert env["r"] == [2, 4, 6]


@pytest.mark.parametrize(
    "source",
    [
        "import os",
        "from os import path",
        "x = ().__class__",
        "x = (lambda: 0).__globals__",
        "class A: pass",
        "async def f(): pass",
        "x = f.f_globals",
        "g = (i for i in []); x = g.gi_frame",
        "o.name = 1",
        "x = o._secret",
    ],
)
def test_escapes_are_refused_before_compiling(source):
    with pytest.raises(SandboxError):
        sandbox.compile_restricted(source, "<test>")


def test_format_fields_follow_the_attribute_rules():
    class Obj:
        name = "ok"
        _hidden = "secret"

    env = run("a = '{0.name}'.format(o)", o=Obj())
    assert env["a"] == "ok"
    with pytest.raises(Exception) as e:
        run("b = '{0._hidden}'.format(o)", o=Obj())
    assert "secret" not in str(e.value)
    with pytest.raises(Exception):
        run("c = '{0.__class__}'.format(o)", o=Obj())


def test_getattr_and_hasattr_are_checked():
    class Obj:
        _hidden = 1
        shown = 2

    env = run("a = getattr(o, 'shown'); b = hasattr(o, '_hidden')", o=Obj())
    assert env["a"] == 2
    assert env["b"] is False
    with pytest.raises(Exception):
        run("getattr(o, '_hidden')", o=Obj())
    with pytest.raises(Exception):
        run("getattr(o, '__class__')", o=Obj())


def test_builtins_leave_out_the_dangerous_ones():
    b = sandbox.safe_builtins()
    for name in ("open", "eval", "exec", "compile", "globals", "vars", "breakpoint", "input"):
        assert name not in b, name
    with pytest.raises(Exception):
        run("open('/etc/passwd')")
    with pytest.raises(Exception):
        run("eval('1')")
