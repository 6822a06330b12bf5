# Built-in provider "http_json": REST/JSON clients for task code. `http_json` is configured
# by the project's HTTP_JSON_* settings; `http_json_client(NAME)` makes more, from NAME_*.
#
# Settings (credentials and the base URL from secrets only; the rest from secrets, else
# params: developers write params, and the base URL decides where the credentials go):
#   HTTP_JSON_BASE_URL   secret: base URL of every request (required)
#   HTTP_JSON_TOKEN      secret: sent as "Authorization: Bearer <token>"
#   HTTP_JSON_AUTH_HEADER / HTTP_JSON_AUTH_SCHEME   other header / scheme ("none": bare token)
#   HTTP_JSON_USER, HTTP_JSON_PASSWORD   secrets: HTTP basic authentication instead
#   HTTP_JSON_TIMEOUT    seconds (default 30)
import re

from pg_sync import rest

_CLIENT_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


def eval_context(secrets, context):
    params = context["params"]
    clients = {}

    def http_json_client(name):
        """The client configured by the settings NAME_BASE_URL (a secret), NAME_TOKEN or
        NAME_USER + NAME_PASSWORD, NAME_AUTH_HEADER, NAME_AUTH_SCHEME, NAME_TIMEOUT."""
        if not isinstance(name, str) or not _CLIENT_NAME.match(name):
            raise ValueError("http_json_client: the name is the settings' prefix in capitals, e.g. 'CRM' for CRM_BASE_URL, not %r" % (name,))
        client = clients.get(name)
        if client is None:
            client = rest.client_from_settings(name, secrets, params, name=name.lower())
            clients[name] = client
        return client

    helpers = {
        "http_json": rest.client_from_settings("HTTP_JSON", secrets, params, name="http_json"),
        "http_json_client": http_json_client,
    }
    helpers.update(rest.ERRORS)
    return helpers
