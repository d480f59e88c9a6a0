#!/usr/bin/env python3
"""Heap allocations in a callgrind profile: the calls into Rust's allocator entry points
(`__rust_alloc`, `__rust_alloc_zeroed`; `__rust_realloc` apart), into mimalloc's (`mi_malloc_aligned`,
`mi_zalloc_aligned`: what `__rust_alloc` becomes once link-time optimisation inlines the shim)
and into libc's `malloc` / `calloc` (C code such as aws-lc). Counted at every call site, whatever
the global allocator: valgrind's DHAT sees only libc's malloc, so it cannot count mimalloc's
blocks. A call from one entry point into another (the shim `__rust_alloc` calling
`mi_malloc_aligned`, or the system allocator's `malloc`) is one block, counted once.

Usage: callgrind_calls.py CALLGRIND_OUT   -> prints "ALLOCS REALLOCS"
"""
import re
import sys

NEW = {"__rustc::__rust_alloc", "__rustc::__rust_alloc_zeroed", "malloc", "calloc",
       "mi_malloc_aligned", "mi_zalloc_aligned"}
GROW = {"__rustc::__rust_realloc", "realloc", "mi_realloc_aligned"}
# Callers whose calls into an entry point above are the same block again: the allocator shims.
SHIMS = ("__rust_alloc", "__rust_realloc", "__rdl_alloc", "__rdl_realloc", "GlobalAlloc")


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
    # `__rust_alloc` calls `malloc` (system allocator) or `mi_malloc_aligned`: count it once.
    shim_new, shim_grow = from_shims(path, names)
    print(new - shim_new, grow - shim_grow)


def from_shims(path, names):
    """Calls into an entry point made by the Rust allocator shims themselves: (new, grow)."""
    caller, target, new, grow = None, None, 0, 0
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("fn="):
                m = re.match(r"fn=\((\d+)\)", line)
                caller = names.get(m.group(1)) if m else None
            elif line.startswith("cfn="):
                m = re.match(r"cfn=\((\d+)\)", line)
                target = names.get(m.group(1)) if m else None
            elif line.startswith("calls=") and (target in NEW or target in GROW):
                if caller and any(s in caller for s in SHIMS):
                    n = int(line.split()[0][len("calls="):])
                    if target in NEW:
                        new += n
                    else:
                        grow += n
                target = None
    return new, grow


if __name__ == "__main__":
    main(sys.argv[1])
