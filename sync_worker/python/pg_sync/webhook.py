# Webhook calls in task code (module `pg_sync.webhook`): the read-only `httprequest`
# handed to handle_webhook(), and the mapping of its return value to an HTTP response.
import json as _json

from pg_sync import errors as _errors


class MultiDict:
    """Form fields, query arguments or files: `d[key]` / `d.get(key)` give the first
    value, `d.getlist(key)` all of them (like Werkzeug's MultiDict in Odoo)."""

    __slots__ = ("_pairs",)

    def __init__(self, pairs):
        object.__setattr__(self, "_pairs", list(pairs))

    def __getitem__(self, key):
        for k, v in self._pairs:
            if k == key:
                return v
        raise KeyError(key)

    def get(self, key, default=None, type=None):
        for k, v in self._pairs:
            if k == key:
                if type is None:
                    return v
                try:
                    return type(v)
                except (TypeError, ValueError):
                    return default
        return default

    def getlist(self, key):
        return [v for k, v in self._pairs if k == key]

    def keys(self):
        seen = []
        for k, _ in self._pairs:
            if k not in seen:
                seen.append(k)
        return seen

    def values(self):
        return [self[k] for k in self.keys()]

    def items(self, multi=False):
        if multi:
            return list(self._pairs)
        return [(k, self[k]) for k in self.keys()]

    def to_dict(self, flat=True):
        if flat:
            return dict(self.items())
        return {k: self.getlist(k) for k in self.keys()}

    def __contains__(self, key):
        return any(k == key for k, _ in self._pairs)

    def __iter__(self):
        return iter(self.keys())

    def __len__(self):
        return len(self.keys())

    def __bool__(self):
        return bool(self._pairs)

    def __setattr__(self, name, value):
        raise AttributeError("request data is read-only")

    def __repr__(self):
        return "MultiDict(%r)" % (self._pairs,)


class Headers(MultiDict):
    """Request headers; names are case-insensitive."""

    __slots__ = ()

    def __init__(self, pairs):
        MultiDict.__init__(self, [(k.lower(), v) for k, v in pairs])

    def __getitem__(self, key):
        return MultiDict.__getitem__(self, key.lower())

    def get(self, key, default=None, type=None):
        return MultiDict.get(self, key.lower(), default, type)

    def getlist(self, key):
        return MultiDict.getlist(self, key.lower())

    def __contains__(self, key):
        return MultiDict.__contains__(self, key.lower())


class UploadedFile:
    """One file of a multipart/form-data request."""

    __slots__ = ("name", "filename", "content_type", "data")

    def __init__(self, name, filename, content_type, data):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "filename", filename)
        object.__setattr__(self, "content_type", content_type)
        object.__setattr__(self, "data", data)

    @property
    def size(self):
        return len(self.data)

    def read(self):
        return self.data

    def __setattr__(self, name, value):
        raise AttributeError("request data is read-only")

    def __repr__(self):
        return "<UploadedFile %s: %s (%s, %d bytes)>" % (self.name, self.filename, self.content_type, len(self.data))


class HttpRequest:
    """What handle_webhook(httprequest) receives (read-only)."""

    __slots__ = ("method", "path", "url", "query_string", "args", "headers", "remote_addr", "data", "json", "form", "files", "content_type")

    def __init__(self, req):
        values = {
            "method": req["method"],
            "path": req["path"],
            "url": req["url"],
            "query_string": req["query"],
            "args": MultiDict(req["args"]),
            "headers": Headers(req["headers"]),
            "remote_addr": req["remote_addr"],
            "data": req["data"],
            "json": req["json"],
            "form": MultiDict(req["form"]),
            "files": MultiDict([(f[0], UploadedFile(*f)) for f in req["files"]]),
            "content_type": req["content_type"],
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def get_data(self, as_text=False):
        return self.data.decode("utf-8", "replace") if as_text else self.data

    def get_json(self):
        return self.json

    def __setattr__(self, name, value):
        raise AttributeError("httprequest is read-only")

    def __repr__(self):
        return "<HttpRequest %s %s>" % (self.method, self.path)


def _header_pairs(headers):
    if headers is None:
        return []
    items = headers.items() if hasattr(headers, "items") else headers
    out = []
    for item in items:
        try:
            name, value = item
        except (TypeError, ValueError):
            raise _errors.UserError("webhook response headers must be a dict or a list of (name, value) pairs, got %r" % (item,)) from None
        out.append((str(name), str(value)))
    return out


def response_for(result, content_type):
    """(status, headers, body bytes) for a handler's return value: a json trigger sends
    the value as JSON; a form trigger sends `data`, `(data, status)` or
    `(data, status, headers)`."""
    if content_type == "json":
        body = _json.dumps(result, default=str).encode("utf-8")
        return 200, [("content-type", "application/json")], body
    data, status, headers = result, 200, []
    if isinstance(result, tuple):
        if len(result) == 2:
            data, status = result
        elif len(result) == 3:
            data, status, headers = result
            headers = _header_pairs(headers)
        else:
            raise _errors.UserError(
                "a form webhook handler returns data, (data, status) or (data, status, headers); got a tuple of %d items" % len(result)
            )
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise _errors.UserError("webhook response status must be an integer from 100 to 599, got %r" % (status,))
    if data is None:
        body, default_type = b"", None
    elif isinstance(data, (bytes, bytearray)):
        body, default_type = bytes(data), "application/octet-stream"
    elif isinstance(data, str):
        body, default_type = data.encode("utf-8"), "text/plain; charset=utf-8"
    elif isinstance(data, (dict, list)):
        body, default_type = _json.dumps(data, default=str).encode("utf-8"), "application/json"
    else:
        body, default_type = str(data).encode("utf-8"), "text/plain; charset=utf-8"
    if default_type and not any(name.lower() == "content-type" for name, _ in headers):
        headers = headers + [("content-type", default_type)]
    return status, headers, body
