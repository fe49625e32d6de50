"""No shell strings anywhere in the package: every command is an argv list.

A scan of ``src/`` (not a sample): any ``shell=True``, ``os.system``, ``os.popen``,
``create_subprocess_shell``, ``commands.getoutput`` or ``pty.spawn`` of a string fails
this test, naming the file and line.
"""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).parents[2] / "src" / "loops"
FORBIDDEN = re.compile(
    r"shell\s*=\s*True|\bos\.system\s*\(|\bos\.popen\s*\(|create_subprocess_shell"
    r"|\bgetoutput\s*\(|\bgetstatusoutput\s*\(|\bos\.exec[lv]p?e?\s*\(\s*['\"]/bin/sh"
)


def scan(root: Path) -> list[str]:
    hits = []
    for path in sorted(root.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if FORBIDDEN.search(line):
                hits.append(f"{path.relative_to(root.parent)}:{number}: {line.strip()}")
    return hits


def test_the_package_builds_no_shell_strings() -> None:
    files = list(SRC.rglob("*.py"))
    assert len(files) > 50  # the scan sees the package, not an empty folder
    assert scan(SRC) == []


def test_the_scan_catches_each_form(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    forms = [
        "subprocess.run(cmd, shell=True)",
        "subprocess.Popen(cmd, shell = True)",
        "os.system('ls ' + name)",
        "os.popen(cmd)",
        "await asyncio.create_subprocess_shell(cmd)",
        "subprocess.getoutput(cmd)",
    ]
    (pkg / "bad.py").write_text("\n".join(forms) + "\nsubprocess.run(['ls', name])\n")
    assert len(scan(pkg)) == len(forms)
