"""Git as memory, worktrees as isolation.

One concept per module, inside out:

- :mod:`loops.git.commits`: commits as values, parsed from ``git log`` (pure).
- :mod:`loops.git.relevance`: BM25 ranking of commits against a prompt (pure).
- :mod:`loops.git.layout`: where loops keeps its files and branches (pure).
- :mod:`loops.git.repo`: :class:`~loops.git.repo.Repo`, the async wrapper over ``git``.
- :mod:`loops.git.grounding`: the memory text for the next prompt (``ground=``).
- :mod:`loops.git.milestone`: one structured commit on convergence (``commit=``).
- :mod:`loops.git.consolidate`: fold old history into a bounded record.
- :mod:`loops.git.locks`: the per-repository landing lock.
- :mod:`loops.git.worktrees`: isolated nodes in their own worktrees, landing on pass.
"""
