#!/usr/bin/env python3
"""Heap allocations in a callgrind profile: the calls into Rust's allocator entry points
(`__rust_alloc`, `__rust_alloc_zeroed`; `__rust_realloc` apart) and into libc's `malloc` /
`calloc` (C code such as aws-lc). Counted at every call site, whatever the global allocator:
valgrind's DHAT sees only libc's malloc, so it cannot count mimalloc's blocks.

Usage: callgrind_calls.py CALLGRIND_OUT   -> prints "ALLOCS REALLOCS"
"""
import re
import sys

NEW = {"__rustc::__rust_alloc", "__rustc::__rust_alloc_zeroed", "malloc", "calloc"}
GROW = {"__rustc::__rust_realloc", "realloc"}


def main(path):
    names, target = {}, None
    new = grow = 0
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith(("cfn=", "fn=")):
                m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
                if m and m.group(2):
                    names[m.group(1)] = m.group(2)
                # A callee name applies to the next `calls=` line only.
                target = names.get(m.group(1)) if m and line.startswith("cfn=") else None
            elif line.startswith("calls=") and target is not None:
                n = int(line.split()[0][len("calls="):])
                if target in NEW:
                    new += n
                elif target in GROW:
                    grow += n
                target = None
    # With the system allocator `__rust_alloc` calls `malloc`: count that block once.
    print(new - rust_to_libc(path, names), grow)


def rust_to_libc(path, names):
    """Calls to malloc/calloc made by the Rust allocator shims themselves."""
    caller, target, n = None, None, 0
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("fn="):
                m = re.match(r"fn=\((\d+)\)", line)
                caller = names.get(m.group(1)) if m else None
            elif line.startswith("cfn="):
                m = re.match(r"cfn=\((\d+)\)", line)
                target = names.get(m.group(1)) if m else None
            elif line.startswith("calls=") and target in ("malloc", "calloc"):
                if caller and ("__rust_alloc" in caller or "__rdl_alloc" in caller):
                    n += int(line.split()[0][len("calls="):])
                target = None
    return n


if __name__ == "__main__":
    main(sys.argv[1])
