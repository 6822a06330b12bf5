# Telegram demo, SETUP_TELEGRAM button: have Telegram send the bot's updates to the
# TELEGRAM webhook (the result shows its URL with the token as ***).


def handle_button():
    shown = telegram_set_webhook(webhooks.TELEGRAM, allowed_updates=["message", "edited_message"])
    return {"webhook": shown}
