"""``python -m bot``: the same as the ``portpatrol`` command."""

from bot.cli import main

main()
