#!/usr/bin/env python3
"""Run README.md's runnable shell blocks, in order, as a reader would.

    python3 scripts/readme.py [README.md]        (from the checkout to run them in)

A block is runnable when its fence says so: ```sh runnable (GitHub shows it as plain sh).
All runnable blocks run in one bash (set -euo pipefail), so a variable set in one section is
there in the next, exactly as in a terminal. In a block:

- `#> text` lines are what the command(s) just above them print on stdout; `...` in such a
  line stands for any text, and a line that is only `#> ...` for any number of lines. The
  printed output must match them all, line for line.
- other `#` lines are comments; every other line is shell.

A command that fails (any non-zero exit, a pipeline included) or output that differs stops
the run: exit 1 with the block's line in README.md, what was expected and what was printed.
The whole run is bounded (READMETEST_TIMEOUT seconds, 900 by default).
"""

import os
import re
import signal
import subprocess
import sys
import tempfile


def steps(readme):
    """(line, shell, expected lines) for each step of each runnable block."""
    out, in_block, shell, expect, start = [], False, [], [], 0
    for n, line in enumerate(open(readme, encoding="utf-8"), 1):
        line = line.rstrip("\n")
        if not in_block:
            if re.match(r"^```sh\s+runnable\s*$", line):
                in_block, shell, expect, start = True, [], [], n + 1
            continue
        if line.startswith("```"):
            if shell or expect:
                out.append((start, shell, expect))
            in_block = False
            continue
        if line.startswith("#>"):
            expect.append(line[3:] if line.startswith("#> ") else line[2:])
            continue
        if expect:  # a command after an expected output begins the next step
            out.append((start, shell, expect))
            shell, expect, start = [], [], n
        if not shell:
            start = n
        if line.lstrip().startswith("#") or not line.strip():
            continue
        shell.append(line)
    return out


def matches(expected, printed):
    """`printed` (lines) against `expected` (patterns: `...` any text; a lone `...` any lines)."""

    def line_re(p):
        return re.compile("^" + ".*".join(re.escape(part) for part in p.split("...")) + "$")

    def go(i, j):
        if i == len(expected):
            return j == len(printed)
        if expected[i].strip() == "...":
            return any(go(i + 1, k) for k in range(j, len(printed) + 1))
        return j < len(printed) and line_re(expected[i].rstrip()).match(printed[j]) and go(i + 1, j + 1)

    return go(0, 0)


def main():
    readme = sys.argv[1] if len(sys.argv) > 1 else "README.md"
    todo = steps(readme)
    if not todo:
        sys.exit(f"{readme}: no runnable blocks")
    work = tempfile.mkdtemp(prefix="readme-")
    script = ["set -euo pipefail"]
    for k, (line, shell, _) in enumerate(todo):
        script.append(f"echo {k} >{work}/at")
        script.append("{")
        script.extend(shell)
        script.append(f"}} >{work}/{k}.out")
    script.append(f"echo done >{work}/at")
    path = os.path.join(work, "readme.sh")
    open(path, "w").write("\n".join(script) + "\n")
    timeout = int(os.environ.get("READMETEST_TIMEOUT", "900"))
    print(f">> {len(todo)} steps of {readme}'s runnable blocks (script: {path})", file=sys.stderr, flush=True)
    # Its own process group: whatever the blocks leave running (hlsgate, the origin) is
    # stopped with it at the end.
    p = subprocess.Popen(["bash", path], start_new_session=True)
    try:
        code = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        code = "timeout"
    finally:
        subprocess.run(["scripts/run.sh", "--stop"], stderr=subprocess.DEVNULL)
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    at = open(f"{work}/at").read().strip()
    last = len(todo) if at == "done" else int(at)
    failed = []
    for k in range(last + (0 if at == "done" else 1)):
        line, shell, expect = todo[k]
        printed = open(f"{work}/{k}.out", errors="replace").read() if os.path.exists(f"{work}/{k}.out") else ""
        printed = [l.rstrip() for l in printed.rstrip("\n").split("\n")] if printed.strip() else []
        if k == last and at != "done":
            failed.append(f"{readme}:{line}: the command failed (exit {code}):\n  " + "\n  ".join(shell) + "\nprinted:\n  " + "\n  ".join(printed))
        elif expect and not matches(expect, printed):
            failed.append(f"{readme}:{line}: printed output differs from README's\n  " + "\n  ".join(shell)
                          + "\nREADME shows:\n  " + "\n  ".join(expect) + "\nprinted:\n  " + "\n  ".join(printed))
    if failed:
        print("\n\n".join(failed), file=sys.stderr)
        sys.exit(1)
    print(f">> all {len(todo)} steps ran and printed what {readme} shows", file=sys.stderr)


if __name__ == "__main__":
    main()
