#!/usr/bin/python3
"""Fails when the modules include each other in a circle.

A module is src/NAME.c with its header, include/predcache/NAME.h (public) or src/NAME.h
(private to the proxy's modules: preq, answer, coalesce, ...); a header src/NAME_int.h
belongs to module NAME too (store_int.h is store's, shared with store_cluster). Module A
depends on module B when A's .c or private header includes B's header. Prints each circle (a strongly connected set of more than one module) and exits 1
when there is one; prints the number of modules and edges otherwise."""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INCLUDE = re.compile(r'^\s*#\s*include\s+"(?:predcache/)?([A-Za-z0-9_]+)\.h"', re.M)


def module_of_header(name):
    return name[:-4] if name.endswith("_int") else name


def graph():
    src = os.path.join(ROOT, "src")
    edges = {}
    for f in sorted(os.listdir(src)):
        if not f.endswith((".c", ".h")):
            continue
        base = f[:-2]
        mod = module_of_header(base) if f.endswith(".h") else base
        with open(os.path.join(src, f)) as fh:
            text = fh.read()
        deps = edges.setdefault(mod, set())
        for h in INCLUDE.findall(text):
            dep = module_of_header(h)
            if dep != mod:
                deps.add(dep)
    return edges


def circles(edges):
    """Tarjan's strongly connected components of more than one module."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main():
    edges = graph()
    found = circles(edges)
    for comp in found:
        print("check_modules: modules include each other in a circle: %s" % ", ".join(comp))
    if found:
        return 1
    print("check_modules: %d modules, %d dependencies, no circle" % (
        len(edges), sum(len(d) for d in edges.values())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
