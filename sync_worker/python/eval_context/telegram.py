# Built-in provider "telegram": `telegram`, a Telegram Bot API client on pg_sync.rest.
# The bot token is part of every Bot API URL (/bot<token>/method): it is masked in logs.
#
# Settings:
#   TELEGRAM_BOT_TOKEN   secret: the token @BotFather gave
#   TELEGRAM_BASE_URL    secret; default https://api.telegram.org (never a param: it
#                        decides where the token goes, and developers write params)
#   TELEGRAM_TIMEOUT     seconds (default 30)
# Bot API errors ({"ok": false, "error_code", "description"}) raise HTTPClientError (or
# HTTPRetryableError for 429 "Too Many Requests" and 5xx).
import re

from pg_sync import rest

DEFAULT_BASE_URL = "https://api.telegram.org"
_METHOD = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
# The token of a pg_sync webhook URL (<base_url>/sync/webhook/<token>, webhooks.NAME).
_WEBHOOK_TOKEN = re.compile(r"/sync/webhook/([^/?#]+)")


class Telegram(rest.JsonClient):
    """Telegram Bot API client. Methods return the `result` of the Bot API answer."""

    __slots__ = ()

    def call(self, method, **params):
        """Call Bot API method `method` (e.g. 'sendPhoto') with JSON parameters; its result."""
        return self._call(method, params, ())

    def _call(self, method, params, masks):
        if not isinstance(method, str) or not _METHOD.match(method):
            raise ValueError("a Bot API method is a name such as 'sendMessage', not %r" % (method,))
        payload = {k: v for k, v in params.items() if v is not None}
        answer = self.request("POST", "/" + method, json=payload, masks=masks)
        if not isinstance(answer, dict) or not answer.get("ok"):
            description = answer.get("description") if isinstance(answer, dict) else answer
            raise rest.HTTPClientError("%s: %s failed: %s" % (self.name, method, description), method="POST", status=200, data=answer)
        return answer.get("result")

    def get_me(self):
        """The bot's own user (id, username, ...)."""
        return self.call("getMe")

    def send_message(self, chat_id, text, **opts):
        """Send `text` to `chat_id`; opts as the Bot API names them (parse_mode='HTML',
        reply_to_message_id=..., disable_notification=True...). Returns the Message."""
        return self.call("sendMessage", chat_id=chat_id, text=text, **opts)

    def set_webhook(self, url, **opts):
        """Have Telegram POST updates to `url` (opts: secret_token=, allowed_updates=[...]).
        The secret token and the token of a pg_sync webhook URL are *** in the logs."""
        # Both are credentials of the webhook, and sync.log is read by every sync_user:
        # with them, anyone could post updates the handler takes as Telegram's.
        masks = [opts.get("secret_token")]
        if isinstance(url, str):
            masks.extend(m.group(1) for m in _WEBHOOK_TOKEN.finditer(url))
        return self._call("setWebhook", dict(url=url, **opts), [m for m in masks if m])

    def delete_webhook(self, **opts):
        """Stop webhook deliveries."""
        return self.call("deleteWebhook", **opts)


def eval_context(secrets, context):
    s = rest.Settings("TELEGRAM", secrets, context["params"])
    base, problem = s.base_url("telegram", DEFAULT_BASE_URL)
    token = s.secret("BOT_TOKEN")
    missing = s.missing("BOT_TOKEN")
    client = Telegram(
        base,
        name="telegram",
        path_prefix="/bot" + (token or ""),
        masks=[token] if token else (),
        timeout=s.number("TIMEOUT", rest.DEFAULT_TIMEOUT),
        problem=problem or (("telegram: " + missing) if missing else None),
    )
    helpers = {"telegram": client}
    helpers.update(rest.ERRORS)
    return helpers
