#!/usr/bin/env python3
"""Heap allocations in a callgrind profile: the calls into an allocator entry point made from
outside the allocator. Entry points: Rust's (`__rust_alloc`, `__rust_alloc_zeroed`, the
default `__rdl_*` and any `GlobalAlloc::alloc` that was not inlined; `__rust_realloc` and
friends apart, as reallocations), mimalloc's (`mi_malloc_aligned`, `mi_zalloc_aligned`: what
`__rust_alloc` becomes once link-time optimisation inlines the shim, and what generic code
instantiated in the crate that declares the allocator calls even without it) and libc's
(`malloc`, `calloc`, `posix_memalign`, `aligned_alloc`, `memalign`: C code such as aws-lc, and
the system allocator's over-aligned blocks). A call from one entry point into another — the
shim into mimalloc, `__rdl_alloc` into `malloc` — is the same block and is not counted again.
Counted at every call site, whatever the global allocator: valgrind's DHAT sees only libc's
malloc, so it cannot count mimalloc's blocks.

Usage: callgrind_calls.py CALLGRIND_OUT   -> prints "ALLOCS REALLOCS"
"""
import re
import sys

NEW = {
    "__rustc::__rust_alloc", "__rustc::__rust_alloc_zeroed", "__rdl_alloc", "__rdl_alloc_zeroed",
    "malloc", "calloc", "posix_memalign", "aligned_alloc", "memalign",
    "mi_malloc_aligned", "mi_zalloc_aligned",
}
GROW = {"__rustc::__rust_realloc", "__rdl_realloc", "realloc", "mi_realloc_aligned"}


def kind(name):
    """'new', 'grow' or None for a function name."""
    if name is None:
        return None
    base = name.split(" ")[0]
    if base in NEW or re.search(r"GlobalAlloc>::alloc(_zeroed)?$", base):
        return "new"
    if base in GROW or re.search(r"GlobalAlloc>::realloc$", base):
        return "grow"
    return None


def main(path):
    names, caller, target = {}, None, None
    counts = {"new": 0, "grow": 0}
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith(("cfn=", "fn=")):
                m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
                if m and m.group(2):
                    names[m.group(1)] = m.group(2)
                name = names.get(m.group(1)) if m else None
                if line.startswith("fn="):
                    caller = name
                    target = None
                else:
                    # A callee name applies to the next `calls=` line only.
                    target = name
            elif line.startswith("calls=") and target is not None:
                k = kind(target)
                # Inside the allocator (one entry point calling another): the same block.
                if k and kind(caller) is None:
                    counts[k] += int(line.split()[0][len("calls="):])
                target = None
    print(counts["new"], counts["grow"])


if __name__ == "__main__":
    main(sys.argv[1])
