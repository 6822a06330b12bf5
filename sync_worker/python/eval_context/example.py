# Example evaluation-context provider, built into the worker: projects list "example" in
# sync.project.eval_context to get `example_sign(payload)`, an HMAC-SHA256 signature made
# with the project's EXAMPLE_KEY secret. The key stays in the closure: task code can use
# it without being able to read it.
#
# A provider is a module defining eval_context(secrets, context) -> dict of public names.
# `secrets` reads by attribute or key; `context` is a read-only view of the names so far
# (env, log, params, ...). Keep secret values in closures or "_" attributes only.
import hashlib
import hmac


def eval_context(secrets, context):
    key = (secrets.get("EXAMPLE_KEY") or "").encode()
    log = context["log"]

    def example_sign(payload):
        """Hex HMAC-SHA256 of `payload` (text) with the project's EXAMPLE_KEY secret."""
        data = payload if isinstance(payload, bytes) else str(payload).encode()
        log("example_sign: signed %d bytes" % len(data), context["LOG_DEBUG"])
        return hmac.new(key, data, hashlib.sha256).hexdigest()

    return {"example_sign": example_sign}
