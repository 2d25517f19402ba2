"""The Telegram front end: python-telegram-bot translation, HTML rendering."""
