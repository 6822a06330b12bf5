# Restricted execution for common code and task code (module `pg_sync.sandbox`).
#
# Like Odoo's safe_eval, the source is checked before it is compiled: no import, no class,
# no async, no name or attribute starting with "__", no attribute starting with "_", no
# attribute that leads to frames, code or tracebacks, no attribute assignment. What is
# left can only reach objects through public attributes, and every object the context
# hands out keeps its secrets in "_" attributes or closures. `.format`/`.format_map` are
# rewritten to a formatter that applies the same rules to "{0.attr}" fields, and the
# builtins are a safe subset with a checking getattr/hasattr.
import _string
import ast
import builtins as _builtins
import string

from pg_sync.errors import SandboxError

# Attributes without a leading underscore that still reach interpreter internals.
UNSAFE_ATTRIBUTES = frozenset(
    """
    f_back f_builtins f_code f_globals f_locals f_trace f_lasti f_lineno
    gi_frame gi_code gi_yieldfrom gi_running gi_suspended
    cr_frame cr_code cr_await cr_origin cr_running cr_suspended
    ag_frame ag_code ag_await ag_running
    tb_frame tb_next tb_lasti tb_lineno
    co_code co_consts co_names co_varnames co_filename co_lnotab co_freevars co_cellvars
    func_globals func_code func_closure im_func im_self im_class
    mro
    """.split()
)
# Rewritten to checked versions rather than refused.
FORMAT_ATTRIBUTES = frozenset(("format", "format_map"))

FORBIDDEN_NODES = {
    ast.Import: "import is not allowed; the context already provides json, time, datetime, dateutil, timezone, b64encode and b64decode",
    ast.ImportFrom: "import is not allowed; the context already provides json, time, datetime, dateutil, timezone, b64encode and b64decode",
    ast.ClassDef: "class definitions are not allowed; use functions and dicts",
    ast.AsyncFunctionDef: "async functions are not allowed",
    ast.Await: "await is not allowed",
    ast.AsyncFor: "async for is not allowed",
    ast.AsyncWith: "async with is not allowed",
}


def attribute_refusal(name):
    """Why restricted code may not read attribute `name`, or None."""
    if not isinstance(name, str):
        return "attribute names must be strings"
    if name.startswith("_"):
        return "access to private attribute %r is not allowed" % name
    if name in UNSAFE_ATTRIBUTES:
        return "access to attribute %r is not allowed" % name
    return None


class _Checker(ast.NodeVisitor):
    def __init__(self, filename):
        self.filename = filename

    def fail(self, node, message):
        err = SandboxError("%s, line %s: %s" % (self.filename, getattr(node, "lineno", "?"), message))
        err.lineno = getattr(node, "lineno", None)
        raise err

    def name(self, node, name):
        if name and name.startswith("__"):
            self.fail(node, "names starting with '__' are not allowed (%s)" % name)

    def generic_visit(self, node):
        message = FORBIDDEN_NODES.get(type(node))
        if message:
            self.fail(node, message)
        super().generic_visit(node)

    def visit_Name(self, node):
        self.name(node, node.id)
        self.generic_visit(node)

    def visit_arg(self, node):
        self.name(node, node.arg)
        self.generic_visit(node)

    def visit_keyword(self, node):
        self.name(node, node.arg)
        self.generic_visit(node)

    def visit_FunctionDef(self, node):
        self.name(node, node.name)
        self.generic_visit(node)

    def visit_ExceptHandler(self, node):
        self.name(node, node.name)
        self.generic_visit(node)

    def visit_Global(self, node):
        for n in node.names:
            self.name(node, n)

    def visit_Nonlocal(self, node):
        for n in node.names:
            self.name(node, n)

    def visit_MatchAs(self, node):
        self.name(node, node.name)
        self.generic_visit(node)

    def visit_MatchStar(self, node):
        self.name(node, node.name)
        self.generic_visit(node)

    def visit_MatchMapping(self, node):
        self.name(node, node.rest)
        self.generic_visit(node)

    def visit_MatchClass(self, node):
        # Class patterns read attributes by name.
        for attr in node.kwd_attrs:
            why = attribute_refusal(attr) or (
                attr in FORMAT_ATTRIBUTES and "matching on %r is not allowed" % attr
            )
            if why:
                self.fail(node, why)
        self.generic_visit(node)

    def visit_Attribute(self, node):
        if not isinstance(node.ctx, ast.Load):
            self.fail(node, "setting or deleting attributes is not allowed (.%s); use dicts or the object's methods" % node.attr)
        why = attribute_refusal(node.attr)
        if why:
            self.fail(node, why)
        self.generic_visit(node)


class _Rewriter(ast.NodeTransformer):
    def visit_Attribute(self, node):
        self.generic_visit(node)
        if node.attr in FORMAT_ATTRIBUTES:
            call = ast.Call(
                func=ast.Name(id="__pg_sync_attr__", ctx=ast.Load()),
                args=[node.value, ast.Constant(node.attr)],
                keywords=[],
            )
            return ast.copy_location(call, node)
        return node


def compile_restricted(source, filename):
    """Compile restricted code; SyntaxError or SandboxError name the line."""
    tree = ast.parse(source, filename, "exec")
    _Checker(filename).visit(tree)
    tree = _Rewriter().visit(tree)
    ast.fix_missing_locations(tree)
    return compile(tree, filename, "exec")


class _SafeFormatter(string.Formatter):
    def get_field(self, field_name, args, kwargs):
        _first, rest = _string.formatter_field_name_split(field_name)
        for is_attr, key in rest:
            if is_attr:
                why = attribute_refusal(key)
                if why:
                    raise SandboxError("format string: " + why)
        return super().get_field(field_name, args, kwargs)


_FORMATTER = _SafeFormatter()


def _format_of(text):
    def format(*args, **kwargs):
        return _FORMATTER.vformat(text, args, kwargs)

    return format


def _format_map_of(text):
    def format_map(mapping):
        return _FORMATTER.vformat(text, (), mapping)

    return format_map


def _str_format(text, *args, **kwargs):
    return _FORMATTER.vformat(text, args, kwargs)


def _str_format_map(text, mapping):
    return _FORMATTER.vformat(text, (), mapping)


def _checked_attr(obj, name):
    """What `obj.format` / `obj.format_map` compile to in restricted code."""
    if isinstance(obj, str):
        return _format_of(obj) if name == "format" else _format_map_of(obj)
    if obj is str or (isinstance(obj, type) and issubclass(obj, str)):
        return _str_format if name == "format" else _str_format_map
    return _builtins.getattr(obj, name)


_MISSING = object()


def safe_getattr(obj, name, default=_MISSING):
    why = attribute_refusal(name)
    if why:
        raise SandboxError(why)
    try:
        if name in FORMAT_ATTRIBUTES:
            return _checked_attr(obj, name)
        return _builtins.getattr(obj, name)
    except AttributeError:
        if default is _MISSING:
            raise
        return default


def safe_hasattr(obj, name):
    if attribute_refusal(name):
        return False
    return _builtins.hasattr(obj, name)


_SAFE_BUILTIN_NAMES = """
    abs all any ascii bin bool bytearray bytes callable chr complex dict divmod enumerate
    filter float format frozenset hash hex id int isinstance issubclass iter len list map
    max min next oct ord pow range repr reversed round set slice sorted str sum tuple zip
    ArithmeticError AssertionError AttributeError ConnectionError Exception IndexError
    KeyError LookupError NameError NotImplementedError OSError OverflowError RecursionError
    RuntimeError StopIteration TimeoutError TypeError UnicodeDecodeError UnicodeEncodeError
    UnicodeError ValueError ZeroDivisionError
    True False None NotImplemented Ellipsis
""".split()


# C code of the standard library imports helpers through the caller's builtins (e.g.
# datetime.strftime imports time). Restricted code cannot name __import__ itself.
_INTERNAL_IMPORTS = frozenset(("time", "_strptime", "datetime", "_datetime", "calendar", "locale", "codecs", "unicodedata"))


def _internal_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and (name in _INTERNAL_IMPORTS or name.startswith("encodings")):
        return _builtins.__import__(name, globals, locals, fromlist, level)
    raise ImportError("import of %r is not allowed in task code" % name)


def safe_builtins():
    """A fresh builtins dict for restricted code."""
    b = {name: _builtins.__dict__[name] for name in _SAFE_BUILTIN_NAMES}
    b["getattr"] = safe_getattr
    b["hasattr"] = safe_hasattr
    b["__pg_sync_attr__"] = _checked_attr
    b["__import__"] = _internal_import
    return b
