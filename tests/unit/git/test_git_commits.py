"""Parsing git log output into commits (no git needed)."""

from __future__ import annotations

from loops.git import commits
from loops.git.commits import ChangedFile, Trailer

RS, FS = "\x1e", "\x1f"


def record(sha: str, subject: str, body: str, trailers: str, files: str) -> str:
    header = FS.join([sha, "p1 p2", "Ann", "ann@x", "1700000000", subject, body, trailers])
    return f"{RS}{header}{FS}\0\n{files}"


def test_parse_log_reads_fields_trailers_and_files() -> None:
    out = record(
        "a" * 40,
        "feat: x",
        "Why it matters.\n\nLoops-Run-Id: r1\nLoops-Node: n\n",
        "Loops-Run-Id: r1\nLoops-Node: n\n",
        "M\0src/a.py\0R087\0old name.txt\0new\tname.txt\0D\0gone.txt\0",
    )
    out += record("b" * 40, "root", "", "", "A\0first.txt\0")
    first, second = commits.parse_log(out)
    assert first.sha == "a" * 40 and first.parents == ("p1", "p2")
    assert first.author_name == "Ann" and first.authored_at_s == 1_700_000_000
    assert first.body == "Why it matters."
    assert first.trailers == (Trailer("Loops-Run-Id", "r1"), Trailer("Loops-Node", "n"))
    assert first.files == (
        ChangedFile("M", "src/a.py"),
        ChangedFile("R", "new\tname.txt", "old name.txt"),
        ChangedFile("D", "gone.txt"),
    )
    assert second.files == (ChangedFile("A", "first.txt"),) and second.body == ""


def test_body_keeps_a_last_paragraph_that_is_not_the_trailer_block() -> None:
    trailers = commits.parse_trailers("Signed-off-by: A <a@x>")
    assert commits.strip_trailer_block("Text.\n\nNote: not a trailer", trailers) == (
        "Text.\n\nNote: not a trailer"
    )
    assert commits.strip_trailer_block("Signed-off-by: A <a@x>", trailers) == ""


def test_trailer_lookup_is_case_insensitive_and_keeps_repeats() -> None:
    (commit,) = commits.parse_log(
        record("c" * 40, "s", "", "Loops-Verdict: a=met\nloops-verdict: b=unmet\n", "")
    )
    assert commit.trailer("LOOPS-VERDICT") == "b=unmet"
    assert commit.trailer_values("loops-verdict") == ("a=met", "b=unmet")
    assert commit.trailer("missing") is None
