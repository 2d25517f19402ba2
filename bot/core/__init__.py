"""The platform-neutral chat core: commands, roles, wording, rendering and delivery.

It imports no chat SDK, no rq and no redis (import-linter enforces it); it talks to the scan
side through the small protocols in ``bot.core.service``.
"""
