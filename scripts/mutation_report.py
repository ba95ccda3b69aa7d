"""The kill rate of a mutmut run over the code that makes a published number, and every surviving mutant.

Run by scripts/mutation.sh inside the copy it tested: reads ``mutmut results --all true``, keeps the mutants
whose names match the scope patterns given as arguments (fnmatch, as ``mutmut run`` takes them), and prints
one line per file, the total kill-rate line, then each survivor's diff (``mutmut show``).
"""

from __future__ import annotations

import fnmatch
import subprocess
import sys
from collections import Counter, defaultdict

# mutmut's verdicts that mean a test noticed the mutant: a failing test, a test that never finished, a crash.
DETECTED = {"killed", "timeout", "segfault", "caught by type check"}


def results() -> dict[str, str]:
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], capture_output=True, text=True,
                         check=True).stdout
    found = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            found[name] = status
    return found


def module_of(name: str) -> str:
    return name.split(".x", 1)[0] if ".x" in name else name.rsplit(".", 1)[0]


def main(patterns: list[str]) -> int:
    scoped = {n: s for n, s in results().items() if any(fnmatch.fnmatch(n, p) for p in patterns)}
    if not scoped:
        print("no mutant matched the scope: nothing was tested")
        return 1
    by_module: dict[str, Counter[str]] = defaultdict(Counter)
    for name, status in scoped.items():
        by_module[module_of(name)][status] += 1
    print("\nmutants per module (detected = killed, timed out or crashed under its tests)")
    for module, counts in sorted(by_module.items()):
        total, detected = sum(counts.values()), sum(counts[s] for s in DETECTED)
        other = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if s not in DETECTED)
        print(f"  {module:<42} {detected:>4}/{total:<4} {100 * detected / total:5.1f}%  {other}")
    total = len(scoped)
    detected = sum(1 for s in scoped.values() if s in DETECTED)
    survivors = sorted(n for n, s in scoped.items() if s not in DETECTED)
    print(f"\nkill rate: {detected}/{total} = {100 * detected / total:.1f}% of the mutants in scope detected; "
          f"{len(survivors)} not ({', '.join(f'{n} {s}' for s, n in sorted(Counter(scoped[x] for x in survivors).items()))})")
    for name in survivors:
        print(f"\n--- {name}: {scoped[name]}")
        diff = subprocess.run([sys.executable, "-m", "mutmut", "show", name], capture_output=True, text=True).stdout
        changed = [line for line in diff.splitlines() if line[:1] in "-+" and line[:3] not in ("---", "+++")]
        print("\n".join(changed) or diff)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
