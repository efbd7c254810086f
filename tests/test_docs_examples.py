"""Every Python example of README.md and docs/*.md runs as written; every relative link resolves.

The ```python blocks of one file run in order in one namespace (they read as
one session), in an empty temporary working folder, on one torch thread, with
the KLE cache in that folder. A block that cannot run here (it needs a GPU or
a Dask cluster) is marked with ``<!-- not-tested: reason -->`` on the line
before its fence; it is reported as a skipped test with that reason and not
run. Links: every relative markdown link must name an existing file and,
with ``#anchor``, a heading of it (GitHub's anchor rules).
"""

from __future__ import annotations

import os
import re
import shlex
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_NOT_TESTED = re.compile(r"^\s*<!--\s*not-tested:\s*(?P<reason>.+?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a markdown file."""

    path: Path
    line: int  # 1-based line of the first code line
    lang: str
    code: str
    not_tested: str | None  # the reason, when marked

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def code_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of ``path`` (indented fences inside lists included)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent = m["fence"], len(m["indent"])
        lang = m["info"].strip().split(" ")[0].lower() if m["info"].strip() else ""
        prev = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marked = _NOT_TESTED.match(prev)
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            close = lines[j].strip()
            if close.startswith(fence[0] * len(fence)) and not close.strip(fence[0]):
                break
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        else:  # pragma: no cover - an unclosed fence is a broken document
            pytest.fail(f"{path.relative_to(ROOT)}:{i + 1}: unclosed code fence")
        blocks.append(
            Block(path, i + 2, lang, "\n".join(body), marked["reason"] if marked else None)
        )
        i = j + 1
    return blocks


def _python_blocks(path: Path) -> list[Block]:
    return [b for b in code_blocks(path) if b.lang in ("python", "py")]


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


# --------------------------------------------------------------------------- examples

FILES_WITH_EXAMPLES = [p for p in DOCS if any(not b.not_tested for b in _python_blocks(p))]
NOT_TESTED = [b for p in DOCS for b in _python_blocks(p) if b.not_tested]


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """An empty working folder, the KLE cache inside it, one torch thread, no display."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DARCYVAE_CACHE_DIR", str(tmp_path / ".cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("path", FILES_WITH_EXAMPLES, ids=_ids(FILES_WITH_EXAMPLES))
def test_python_examples_run_as_written(path, sandbox):
    namespace: dict[str, object] = {"__name__": "__main__"}
    for block in _python_blocks(path):
        if block.not_tested:
            continue
        # Pad so that a traceback names the line of the markdown file.
        source = "\n" * (block.line - 1) + block.code + "\n"
        try:
            code = compile(source, str(path), "exec")
        except SyntaxError as exc:  # pragma: no cover - shown as a test failure
            pytest.fail(f"{block.name}: the example does not compile: {exc}")
        exec(code, namespace)  # noqa: S102 - running the documented examples is the test


@pytest.mark.parametrize("block", NOT_TESTED, ids=[b.name for b in NOT_TESTED])
def test_examples_marked_not_tested(block):
    """The examples that CI cannot run, listed with the reason their marker gives."""
    assert block.not_tested.strip(), f"{block.name}: a not-tested marker needs a reason"
    pytest.skip(f"{block.name}: not tested: {block.not_tested}")


def test_every_python_example_is_collected():
    """The documents do have examples, and none hides behind an unusual fence label."""
    assert FILES_WITH_EXAMPLES, "no ```python examples found"
    assert ROOT / "README.md" in FILES_WITH_EXAMPLES
    for path in DOCS:
        for block in code_blocks(path):
            looks_python = re.search(
                r"^(from \w[\w.]* import |import \w)", block.code, re.MULTILINE
            )
            if looks_python and block.lang not in ("python", "py"):
                pytest.fail(f"{block.name}: Python code in a ```{block.lang} block is not tested")


def test_code_block_parser(tmp_path):
    md = tmp_path / "x.md"
    md.write_text(
        "text\n```python\na = 1\n```\n\n<!-- not-tested: needs a GPU -->\n```python\n"
        "b = 2\n```\n- item\n\n  ```toml\n  [run]\n  ```\n````markdown\n```python\nc\n```\n````\n"
    )
    blocks = code_blocks(md)
    assert [(b.lang, b.code, b.not_tested, b.line) for b in blocks] == [
        ("python", "a = 1", None, 3),
        ("python", "b = 2", "needs a GPU", 8),
        ("toml", "[run]", None, 13),
        ("markdown", "```python\nc\n```", None, 16),
    ]


def test_readme_keeps_the_ci_test_command():
    """.ci/run runs the README's test command; the two must not drift apart."""
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in (ROOT / "README.md").read_text()


# --------------------------------------------------------------------------- links

_LINK = re.compile(r"(?<!\\)!?\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
_INLINE_CODE = re.compile(r"(`+).+?\1")


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"<[^>]+>", "", heading.strip())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading keeps its text
    out = []
    for ch in text.lower():
        if ch in (" ", "-"):
            out.append("-")
        elif ch == "_" or unicodedata.category(ch)[0] in "LN":
            out.append(ch)
    return "".join(out)


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, line)`` of the lines of ``path`` outside fenced code blocks."""
    out = []
    fence = None
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = _FENCE.match(line)
        if fence is None:
            if m:
                fence = m["fence"]
            else:
                out.append((no, line))
        elif m and m["fence"].startswith(fence) and m["fence"][0] == fence[0] and not m["info"]:
            fence = None
    return out


def anchors(path: Path) -> set[str]:
    """The anchors of the headings of ``path`` (duplicates get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    result: set[str] = set()
    for _, line in prose_lines(path):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = github_anchor(m[1])
        n = seen.get(base, 0)
        seen[base] = n + 1
        result.add(base if n == 0 else f"{base}-{n}")
    return result


def relative_links(path: Path) -> list[tuple[int, str]]:
    """``(line, target)`` of every link outside code that is not a URL."""
    links = []
    for no, line in prose_lines(path):
        for m in _LINK.finditer(_INLINE_CODE.sub("", line)):
            target = m["target"]
            if re.match(
                r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE
            ):  # http:, https:, mailto:, ...
                continue
            links.append((no, target))
    return links


def test_anchor_rules():
    assert github_anchor("§1a Scheme `fd`: the paper's finite differences") == (
        "1a-scheme-fd-the-papers-finite-differences"
    )
    assert github_anchor("§5 The scores S_D and S_KL") == "5-the-scores-s_d-and-s_kl"
    assert github_anchor("§5a The k-NN divergence estimator (Wang, Kulkarni and Verdú 2009)") == (
        "5a-the-k-nn-divergence-estimator-wang-kulkarni-and-verdú-2009"
    )


@pytest.mark.parametrize("path", DOCS, ids=_ids(DOCS))
def test_relative_links_resolve(path):
    broken = []
    for line, target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"line {line}: {target} (no file {os.path.relpath(dest, ROOT)})")
            continue
        if anchor and dest.suffix == ".md" and unquote(anchor) not in anchors(dest):
            broken.append(f"line {line}: {target} (no heading #{anchor} in {dest.name})")
    assert not broken, f"{path.relative_to(ROOT)} has broken links:\n" + "\n".join(broken)


def _shell_commands(path: Path) -> list[tuple[int, str]]:
    """The ``darcyvae`` command lines of ``path``'s bash blocks (continuations joined,
    comments dropped; a line that elides options with "..." left out), with their line
    numbers."""
    found = []
    for block in code_blocks(path):
        if block.lang not in ("bash", "sh", "console", "shell"):
            continue
        text = re.sub(r"\\\n\s*", " ", block.code)
        for k, line in enumerate(text.splitlines()):
            try:
                words = shlex.split(line.removeprefix("$ "), comments=True)
            except ValueError:  # not shell (e.g. an unbalanced quote in output)
                continue
            command: list[str] = []
            for w in [*words, ";"]:
                if w in ("&&", "||", ";", "|"):
                    if command[:1] == ["darcyvae"] and "..." not in command:  # "..." elides
                        found.append((block.line + k, shlex.join(command[1:])))
                    command = []
                else:
                    command.append(w)
    return found


COMMANDS = [(p, n, c) for p in DOCS for n, c in _shell_commands(p)]


@pytest.mark.parametrize(
    ("path", "line", "command"),
    COMMANDS,
    ids=[f"{p.relative_to(ROOT)}:{n}" for p, n, _ in COMMANDS],
)
def test_shell_commands_of_the_docs_parse(path, line, command):
    """Every ``darcyvae`` command the documents show is accepted by the command line as
    it is now (a renamed or removed option fails here, not in a reader's shell)."""
    from darcyvae.cli import build_parser

    try:
        build_parser().parse_args(shlex.split(command))
    except SystemExit as exc:
        pytest.fail(f"{path.relative_to(ROOT)}:{line}: `darcyvae {command}` does not parse ({exc})")


def test_the_docs_show_shell_commands():
    assert len(COMMANDS) > 20
    assert any(c.startswith("reproduce all") and "--jobs" in c for _, _, c in COMMANDS)
