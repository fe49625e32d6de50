"""Run every ``test_*`` function in ``tests/`` and print a TAP report.

The files to collect are chosen by the ``pattern`` in ``tests.json``. Exits 1 when a
test fails, 0 otherwise (also when no test ran: count them before trusting a 0).
"""

import importlib.util
import json
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "src"))


def main() -> int:
    pattern = json.loads((ROOT / "tests.json").read_text())["pattern"]
    results = []
    for path in sorted((ROOT / "tests").glob(pattern)):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for name in sorted(vars(module)):
            test = getattr(module, name)
            if not (name.startswith("test_") and callable(test)):
                continue
            try:
                test()
            except Exception:
                results.append((f"{path.name}::{name}", traceback.format_exc()))
            else:
                results.append((f"{path.name}::{name}", None))
    print("TAP version 13")
    print(f"1..{len(results)}")
    for number, (name, error) in enumerate(results, 1):
        print(f"{'not ok' if error else 'ok'} {number} - {name}")
        for line in (error or "").splitlines():
            print(f"  # {line}")
    failed = sum(1 for _, error in results if error)
    print(f"# tests {len(results)}")
    print(f"# pass {len(results) - failed}")
    print(f"# fail {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
