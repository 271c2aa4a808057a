"""Docs that run: every shell command in README.md and docs/*.md is run here and must exit 0, or it carries a
marker saying what it needs that a test machine does not have (docs/development.md, "Docs that run").

A command that would run until stopped runs a bounded variant: ``otel-efa run`` and ``otel-efa top`` get
``--count 1`` unless they have a ``--count``, ``otel-efa simulate`` gets ``--once``. Each block runs in a
scratch directory with copies of the checkout's generated and node files, the venv's ``otel-efa`` first on
PATH, IMDS on a closed loopback port (the AWS boundary: nothing here is EC2) and the Prometheus endpoint on a
free port; blocks run side by side, commands of a block one after the other.
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
SHELL_FENCES = {"bash", "sh", "shell", "console"}
# What a command may need that a test machine does not have; docs/development.md has the same table.
MARKERS = ("needs AWS", "needs a cluster", "needs an EFA node", "needs root", "needs the network",
           "takes minutes", "runs until Ctrl-C")
MARKER = re.compile(r"#.*?\b(" + "|".join(re.escape(m) for m in MARKERS) + r")\b")
NEEDS_SOMETHING = re.compile(r"#.*?\b(needs [^:;,.)]+|takes \w+|runs until \S+)")
FENCE = re.compile(r"^\s*```(\S*)\s*$")
HEREDOC = re.compile(r"<<-?\s*'?\"?(\w+)'?\"?")
COPIED = ("alerts", "dashboards", "otel-config", "systemd", "parallelcluster", "adot")
COMMAND_TIMEOUT_S = 60


@dataclass(frozen=True)
class Command:
    where: str  # page:line
    text: str
    marker: Optional[str]  # why it is not run, or None


@dataclass(frozen=True)
class Block:
    where: str
    commands: Tuple[Command, ...]


def _fences(path: Path):
    """(language, first line number, lines) of every fenced block."""
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        opened = FENCE.match(lines[i])
        if not opened:
            i += 1
            continue
        start, body = i + 1, []
        i += 1
        while i < len(lines) and not FENCE.match(lines[i]):
            body.append(lines[i])
            i += 1
        yield opened.group(1), start + 1, body
        i += 1


def _marker(text: str) -> Optional[str]:
    found = MARKER.search(text)
    return found.group(1) if found else None


def _shell_commands(page: str, first: int, lines: List[str]) -> List[Command]:
    """Logical commands of a shell block: continuation lines joined, a here-document kept with its command.
    A comment-only first line with a marker marks the whole block."""
    block_marker = _marker(lines[0]) if lines and lines[0].lstrip().startswith("#") else None
    commands: List[Command] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            i += 1
            continue
        start, parts = i, [line]
        while parts[-1].rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            parts.append(lines[i])
        command_lines = "\n".join(parts)
        heredoc = HEREDOC.search(command_lines)
        if heredoc:
            while i + 1 < len(lines) and lines[i].strip() != heredoc.group(1):
                i += 1
                parts.append(lines[i])
        text = "\n".join(parts)
        commands.append(Command(f"{page}:{first + start}", text, block_marker or _marker(command_lines)))
        i += 1
    return commands


def blocks() -> List[Block]:
    found = []
    for path in PAGES:
        page = str(path.relative_to(ROOT))
        for language, first, lines in _fences(path):
            if language in SHELL_FENCES and language != "console":
                commands = _shell_commands(page, first, lines)
            else:  # a transcript: its "$ " lines are commands
                commands = [Command(f"{page}:{first + n}", line.strip()[2:], _marker(line))
                            for n, line in enumerate(lines) if line.strip().startswith("$ ")]
            if commands:
                found.append(Block(f"{page}:{first}", tuple(commands)))
    return found


def bounded(text: str) -> str:
    """The variant of a command that ends by itself."""
    if "--count" not in text:
        text = re.sub(r"(\botel-efa\s+(?:run|top))\b", r"\1 --count 1", text, count=1)
    if "--once" not in text:
        text = re.sub(r"(\botel-efa\s+simulate)\b", r"\1 --once", text, count=1)
    return text


def _program(text: str) -> str:
    words = [w for w in re.split(r"\s+", text.strip()) if w]
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words.pop(0)  # VAR=value before the program
    return words[0] if words else ""


def _environment(scratch: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_EFA_", "OTEL_EXPORTER_"))}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = f"http://127.0.0.1:{closed}"
    env["OTEL_EFA_PROMETHEUS_ADDRESS"] = "127.0.0.1:0"
    env["HOME"] = str(scratch)
    return env


def _without_comment(text: str) -> str:
    return "\n".join(re.sub(r"\s+#[^'\"]*$", "", line) for line in text.splitlines())


def _distinct(found: List[Block]) -> List[Tuple[Block, Tuple[int, ...]]]:
    """Each block with the positions of its commands to run: a command already run after the same commands
    on another page (the README repeats what docs/ explains) runs once."""
    seen = set()
    chosen = []
    for block in found:
        runnable = [i for i, c in enumerate(block.commands) if not c.marker]
        keys = [tuple(_without_comment(bounded(block.commands[j].text)) for j in runnable[:n + 1])
                for n in range(len(runnable))]
        fresh = tuple(i for i, key in zip(runnable, keys) if key not in seen)
        seen.update(keys)
        if fresh:
            chosen.append((block, tuple(runnable[:runnable.index(fresh[-1]) + 1])))
    return chosen


def _run_block(block: Block, positions: Tuple[int, ...], scratch: Path) -> List[str]:
    """Failures of one block's commands at ``positions``, in order; the first failure stops the block."""
    scratch.mkdir(parents=True)
    for name in COPIED:
        shutil.copytree(ROOT / name, scratch / name)
    env = _environment(scratch)
    for command in (block.commands[i] for i in positions):
        text = bounded(command.text)
        try:
            done = subprocess.run(["bash", "-c", "set -o pipefail\n" + text], cwd=scratch, env=env,
                                  capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return [f"{command.where}: `{text}` did not end within {COMMAND_TIMEOUT_S} s"]
        if done.returncode != 0:
            return [f"{command.where}: `{text}` exited {done.returncode}:\n{done.stderr[-2000:]}"]
    return []


def test_the_parser_finds_commands_markers_and_transcripts(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("\n".join([
        "```bash", "otel-efa metrics   # the catalog", "aws s3 ls \\", "  s3://b   # needs AWS",
        "cat > a.yaml <<'EOF'", "interval: 60", "EOF", "```",
        "```text", "$ sudo otel-efa doctor   # needs an EFA node", "PASS  EFA devices", "```",
        "```bash", "# needs a cluster: on the head node", "promtool check config x.yml", "```"]))
    found = [c for language, first, lines in _fences(page)
             for c in (_shell_commands("p", first, lines) if language == "bash" else
                       [Command("p", line[2:], _marker(line)) for line in lines if line.startswith("$ ")])]
    assert [(c.text.splitlines()[0], c.marker) for c in found] == [
        ("otel-efa metrics   # the catalog", None), ("aws s3 ls \\", "needs AWS"),
        ("cat > a.yaml <<'EOF'", None), ("sudo otel-efa doctor   # needs an EFA node", "needs an EFA node"),
        ("promtool check config x.yml", "needs a cluster")]
    assert found[2].text.endswith("\nEOF")
    assert bounded("otel-efa run --simulate p5.48xlarge") == "otel-efa run --count 1 --simulate p5.48xlarge"
    assert bounded("otel-efa top --count 3") == "otel-efa top --count 3"
    assert bounded("otel-efa simulate p4d.24xlarge --root sim") == "otel-efa simulate --once p4d.24xlarge --root sim"
    assert _program("OTEL_EXPORTER_OTLP_ENDPOINT=http://x otel-efa run") == "otel-efa"


def test_every_command_is_run_or_says_what_it_needs():
    found = blocks()
    commands = [c for b in found for c in b.commands]
    assert len([c for c in commands if not c.marker]) >= 20, "the docs test lost its commands: parser broken?"
    unknown = [f"{c.where}: {m.group(1)!r}" for c in commands if not c.marker
               for m in [NEEDS_SOMETHING.search(c.text)] if m]
    assert not unknown, f"markers the docs test does not know (use one of {MARKERS}): {unknown}"


def test_every_runnable_command_exits_zero(tmp_path):
    runnable, missing = [], set()
    path = _environment(tmp_path)["PATH"]
    for block, positions in _distinct(blocks()):
        programs = {_program(bounded(block.commands[i].text)) for i in positions}
        absent = sorted(p for p in programs if p and shutil.which(p, path=path) is None)
        if absent:
            missing.update(absent)
        else:
            runnable.append((block, positions))
    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = [f for result in pool.map(lambda n: _run_block(*runnable[n], tmp_path / f"block{n}"),
                                             range(len(runnable))) for f in result]
    assert not failures, "\n\n".join(failures)
    if missing:
        warnings.warn(f"docs commands not run: {', '.join(sorted(missing))} not installed (make deps)", stacklevel=1)
