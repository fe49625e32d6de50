"""The loop library: jobs, loops, dags, honest gates, budgets, loop files and run events.

The public names are re-exported from :mod:`loops`; each concept has its own module
here (``outcome``, ``context``, ``jobs``, ``loop``, ``dag``, ``conditions``, ...).
"""
