# Read-only namespaces of the context (module `pg_sync.values`): params, texts, webhooks,
# secrets, and MAGIC (every context name by attribute).


class Namespace:
    """Values read by attribute or key: params.KEY, params["KEY"], params.get("KEY")."""

    __slots__ = ("_kind", "_values")

    def __init__(self, kind, values):
        object.__setattr__(self, "_kind", kind)
        object.__setattr__(self, "_values", dict(values))

    def _missing(self, name):
        known = ", ".join(sorted(self._values)) or "none"
        return "%s has no %r (known: %s)" % (self._kind, name, known)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(self._missing(name)) from None

    def __getitem__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise KeyError(self._missing(name)) from None

    def get(self, name, default=None):
        return self._values.get(name, default)

    def keys(self):
        return list(self._values)

    def __contains__(self, name):
        return name in self._values

    def __iter__(self):
        return iter(list(self._values))

    def __len__(self):
        return len(self._values)

    def __setattr__(self, name, value):
        raise AttributeError("%s is read-only" % self._kind)

    def __delattr__(self, name):
        raise AttributeError("%s is read-only" % self._kind)

    def __repr__(self):
        return "<%s: %s>" % (self._kind, ", ".join(sorted(self._values)))


class Secrets(Namespace):
    """Project secrets: given to evaluation-context providers and core code only."""

    __slots__ = ()

    def __repr__(self):
        return "<secrets: %d values>" % len(self._values)


class Magic:
    """MAGIC.<name>: every public name of the code layer it belongs to (a live view)."""

    __slots__ = ("_names",)

    def __init__(self, names):
        object.__setattr__(self, "_names", names)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._names[name]
        except KeyError:
            raise AttributeError("MAGIC has no %r" % name) from None

    def __setattr__(self, name, value):
        raise AttributeError("MAGIC is read-only")

    def __delattr__(self, name):
        raise AttributeError("MAGIC is read-only")

    def __dir__(self):
        return sorted(n for n in self._names if not n.startswith("_"))

    def __repr__(self):
        return "<MAGIC>"
