# Telegram demo, core code (admins only): the optional TELEGRAM_WEBHOOK_SECRET stays
# here. Task code gets two functions that use it, never the value.
import hmac as _hmac


def _webhook_secret():
    return secrets.get("TELEGRAM_WEBHOOK_SECRET") or None


def telegram_set_webhook(url, **options):
    """setWebhook(url, ...), with the secret_token Telegram then sends back in every
    update when the secret TELEGRAM_WEBHOOK_SECRET is set."""
    if _webhook_secret():
        options["secret_token"] = _webhook_secret()
    return telegram.set_webhook(url, **options)


def telegram_update_is_genuine(httprequest):
    """True when the update carries the secret token (or no secret is set)."""
    expected = _webhook_secret()
    if not expected:
        return True
    given = httprequest.headers.get("X-Telegram-Bot-Api-Secret-Token") or ""
    return _hmac.compare_digest(given.encode(), expected.encode())
