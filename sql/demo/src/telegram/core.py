# Telegram demo, core code (admins only): the optional TELEGRAM_WEBHOOK_SECRET stays
# here. Task code gets two functions that use it, never the value.
import hmac as _hmac
import re as _re


def _webhook_secret():
    return secrets.get("TELEGRAM_WEBHOOK_SECRET") or None


def telegram_set_webhook(url, **options):
    """setWebhook(url, ...), with the secret_token Telegram then sends back in every
    update when the secret TELEGRAM_WEBHOOK_SECRET is set. Logs that the webhook was set
    and returns the URL as logged: with its token as ***."""
    secret = _webhook_secret()
    if secret:
        options["secret_token"] = secret
    telegram.set_webhook(url, **options)
    # sync.log and job results are read by every sync_user: the secret token and the
    # webhook's token would let anyone post updates the handler takes for Telegram's.
    shown = _re.sub(r"/sync/webhook/[^/?#]+", "/sync/webhook/***", url)
    log("Telegram webhook set to %s, %s" % (shown, "with a secret token" if secret else "without a secret token"))
    return shown


def telegram_update_is_genuine(httprequest):
    """True when the update carries the secret token (or no secret is set)."""
    expected = _webhook_secret()
    if not expected:
        return True
    given = httprequest.headers.get("X-Telegram-Bot-Api-Secret-Token") or ""
    return _hmac.compare_digest(given.encode(), expected.encode())
