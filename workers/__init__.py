"""portpatrol scan side: target policy, rate limits, the queue, nmap, risk rules, guidance.

This package never imports ``bot``.
"""
