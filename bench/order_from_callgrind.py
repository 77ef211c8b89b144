#!/usr/bin/env python3
"""The link order list of an executable from callgrind profiles of it (ADR 0041, ADR 0045).

    python3 bench/order_from_callgrind.py EXE OUT CALLGRIND_FILE...

Writes to OUT every function of EXE's own code that ran (callgrind's `fn=` under EXE's `ob=`),
kept when EXE defines it (`nm`: text or weak symbols; callgrind marks recursion with a 'N suffix),
one per line: those of the first profile first (sorted), then those new in the next, and so on.
Used by bench/harnessd_order.sh and bench/harness_order.sh.
"""
import os
import re
import subprocess
import sys


def main():
    exe, out, profiles = sys.argv[1], sys.argv[2], sys.argv[3:]
    exe_real = os.path.realpath(exe)
    nm = subprocess.run(["nm", "-S", exe], capture_output=True, text=True, check=True).stdout
    defined = {p[3] for p in (l.split() for l in nm.splitlines()) if len(p) == 4 and p[2] in "tTwW"}
    names, seen = [], set()
    for profile in profiles:
        ob, ran = None, set()
        for line in open(profile, errors="replace"):
            if line.startswith("ob="):
                ob = os.path.realpath(line[3:].strip())
            elif line.startswith("fn=") and ob == exe_real:
                ran.add(re.sub(r"'\d+$", "", line[3:].strip()))
        for name in sorted((ran & defined) - seen):
            names.append(name)
            seen.add(name)
    with open(out, "w") as f:
        f.write("".join(n + "\n" for n in names))
    print(f"{out}: {len(names)} functions")


if __name__ == "__main__":
    main()
