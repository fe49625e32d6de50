"""The loop-mechanism harness: graded tasks with hidden checks, run under loop designs.

Each task (``tasks/<name>/``) is a small git repository created at run time from the
files in ``repo/`` (plus ``tasks/_common/``), a prompt, and a HIDDEN check
(``hidden/``) that neither the agent nor the loop's gates ever see: it is copied next
to the final tree only after the loop has ended. Each design (:mod:`.designs`) is a
loop built with the real library. The harness (:mod:`.harness`) runs every design on
every task with any engine and reports, per design, the pass rate by the hidden check
and the false "done" rate (the loop passed, the hidden check fails).

Offline, each task is played by a scripted mock agent (:mod:`.personas`) that fails in
one known way: it lies, stalls, breaks other tests, edits the tests, runs zero tests,
or forgets what it tried. Run ``python bench/mechanism --help``.
"""
