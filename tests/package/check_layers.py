#!/usr/bin/python3
"""Holds the headers of include/distopt to the library's layers and components.

Floors (a header includes headers of its own folder and of lower floors only; no cycles):
    core (0) -> data, nn (1, apart from each other) -> optim (2) -> local (3) -> train (4)
    distopt.hpp (the umbrella) sits above all; version.hpp is core.
Components (what a header may need, through everything it includes):
    distopt   core/ (but archive, block_archive), optim/, nn/    Eigen, OpenMP
    data      data/, core/archive.hpp, core/block_archive.hpp    + xtensor, zlib
    train     local/ (but mpi.hpp), train/                       + nlohmann-json
    download  data/download.hpp, data/detail/md5.hpp             + libcurl, libarchive, OpenSSL
    mpi       local/mpi.hpp                                      + MPI
Exit status 1 naming the header and the include that breaks a rule.

    check_layers.py INCLUDE_DIR [--print]     (--print: the floors, one line each)
"""
import re
import sys
from pathlib import Path

FLOORS = {"core": 0, "data": 1, "nn": 1, "optim": 2, "local": 3, "train": 4}
COMPONENT_RANK = {"distopt": 0, "data": 1, "train": 2, "download": 2, "mpi": 3}
EXTERNAL = {  # include prefix -> the component that brings the package
    "Eigen/": "distopt", "omp.h": "distopt",
    "xtensor/": "data", "xtl/": "data", "zlib.h": "data",
    "nlohmann/": "train",
    "curl/": "download", "archive.h": "download", "archive_entry.h": "download", "openssl/": "download",
    "mpi.h": "mpi",
}
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)


def folder_of(rel):
    parts = rel.parts
    return parts[0] if len(parts) > 1 else ""


def component_of(rel):
    text = rel.as_posix()
    if text in ("data/download.hpp", "data/detail/md5.hpp"):
        return "download"
    if text == "local/mpi.hpp":
        return "mpi"
    if text in ("core/archive.hpp", "core/block_archive.hpp") or text.startswith("data/"):
        return "data"
    if text.startswith(("local/", "train/")):
        return "train"
    return "distopt"


def main():
    root = Path(sys.argv[1]).resolve()
    headers = {p.relative_to(root): p for p in root.rglob("*.hpp")}
    project, system = {}, {}
    for rel, path in headers.items():
        project[rel], system[rel] = [], []
        for kind, name in INCLUDE.findall(path.read_text(encoding="utf-8")):
            if name.startswith("distopt/"):
                target = Path(name[len("distopt/"):])
                if target not in headers:
                    sys.exit(f"{rel}: includes {name}, which does not exist")
                project[rel].append(target)
            else:
                system[rel].append(name)

    errors = []
    # Floors and folders.
    for rel, targets in project.items():
        if rel.as_posix() == "distopt.hpp":
            continue
        here = folder_of(rel)
        for target in targets:
            there = folder_of(target)
            if there == here or target.as_posix() == "version.hpp":
                continue
            if here not in FLOORS or there not in FLOORS:
                errors.append(f"{rel}: includes {target}, outside the floors")
            elif FLOORS[there] >= FLOORS[here]:
                errors.append(f"{rel} ({here}, floor {FLOORS[here]}) includes {target} ({there}, floor {FLOORS[there]})")

    # No cycles (depth-first search over the project includes).
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for target in project[node]:
            if state.get(target) == "open":
                cycle = stack[stack.index(target):] + [target]
                errors.append("include cycle: " + " -> ".join(str(c) for c in cycle))
            elif target not in state:
                visit(target, stack + [target])
        state[node] = "done"

    for rel in sorted(project):
        if rel not in state:
            visit(rel, [rel])

    # Components: everything a header brings in, transitively.
    closure = {}

    def reach(node):
        if node not in closure:
            closure[node] = set()
            mine = {node}
            for target in project[node]:
                mine |= reach(target)
            closure[node] = mine
        return closure[node]

    for rel in sorted(project):
        if rel.as_posix() == "distopt.hpp":
            continue
        mine = component_of(rel)
        allowed = COMPONENT_RANK[mine]
        for included in sorted(reach(rel)):
            theirs = component_of(included)
            if theirs != mine and COMPONENT_RANK[theirs] >= allowed and not (mine == "mpi" and theirs == "train") \
                    and not (COMPONENT_RANK[theirs] < allowed):
                errors.append(f"{rel} (component {mine}) reaches {included} (component {theirs})")
            for name in system[included]:
                for prefix, needs in EXTERNAL.items():
                    if name == prefix or name.startswith(prefix):
                        ok = needs == mine or COMPONENT_RANK[needs] < allowed or (needs == "data" and mine in ("download",))
                        if not ok:
                            errors.append(f"{rel} (component {mine}) reaches <{name}> through {included}, "
                                          f"which only distopt::{needs} brings")

    if errors:
        print("\n".join(sorted(set(errors))))
        sys.exit(1)
    if "--print" in sys.argv:
        by_floor = {}
        for rel in project:
            if rel.as_posix() == "distopt.hpp":
                continue
            floor = 0 if rel.as_posix() == "version.hpp" else FLOORS[folder_of(rel)]
            by_floor.setdefault(floor, set()).add(folder_of(rel) or rel.as_posix())
        print("umbrella: distopt.hpp")
        for floor in sorted(by_floor, reverse=True):
            print(f"floor {floor}: {', '.join(sorted(by_floor[floor]))}")
    print(f"{len(project)} headers: floors respected, no include cycle, components within their packages")


if __name__ == "__main__":
    main()
