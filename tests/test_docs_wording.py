"""The project calls its source guide "the AWS ParallelCluster EFA monitoring quick-start" (or "the
quick-start") and its script "the original efa_network_monitor.py": a reader cannot know what a process word
for it would mean. This scans every file git tracks (and new files not yet added) for one."""
import re
import subprocess
from pathlib import Path
from typing import List

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORD = "se" + "ed"  # built, so that this file does not hold the word it looks for
# A random-number generator's starting value is the one other meaning the word has: allowed on such a line.
RANDOM_NUMBERS = re.compile(rf"random|\brng\b|\.{WORD}\(|\b{WORD}\s*=|--{WORD}\b", re.IGNORECASE)
GUIDE_WORD = re.compile(WORD, re.IGNORECASE)


def project_files() -> List[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                                cwd=ROOT, capture_output=True, check=True, timeout=30).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (an unpacked sdist): nothing tracked to scan")
    return [ROOT / name for name in listed.decode().split("\0") if name and (ROOT / name).is_file()]


def offending_lines(text: str) -> List[str]:
    return [line.strip() for line in text.splitlines()
            if GUIDE_WORD.search(line) and not RANDOM_NUMBERS.search(line)]


def test_the_scan_finds_the_word_and_spares_random_numbers():
    assert offending_lines(f"# from the {WORD}'s script\nok") == [f"# from the {WORD}'s script"]
    assert offending_lines(f"rng = random.Random({WORD}=4)\nsettings(derandomize=True)") == []
    assert offending_lines(f"{WORD.upper()}_NAMES = []") == [f"{WORD.upper()}_NAMES = []"]


def test_no_file_calls_the_quick_start_by_a_process_word():
    found = []
    for path in project_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary: no prose in it
        found += [f"{path.relative_to(ROOT)}: {line[:100]}" for line in offending_lines(text)]
    assert not found, ("say 'the AWS ParallelCluster EFA monitoring quick-start' (or 'the quick-start') and "
                       "'the original efa_network_monitor.py':\n" + "\n".join(found))
