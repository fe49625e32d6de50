"""The run registry: supervised runs recorded under ``<LOOPS_HOME>/runs/<runId>/``.

Writing: :mod:`loops.runs.recorder` (an event sink). Reading: :mod:`loops.runs.registry`.
Semantic records: :mod:`loops.runs.records`. The live picture: :mod:`loops.runs.view`.
"""
