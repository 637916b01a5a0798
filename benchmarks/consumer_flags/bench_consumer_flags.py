#!/usr/bin/python3
"""A consumer's speed with its own flags: CMake's default Release flags against -march=native.

Installs distopt from a build folder into a temporary prefix, builds the consumer in this folder
(speed.cpp: LeNet-5 training steps, and a train::run_training epoch on Fashion-MNIST) twice
against that prefix, once with CMake's default Release flags and once with -march=native added,
runs the two programs in turn `--repeats` times and prints, per workload, the best images/s of
each, the kernel path each took, and their ratio (default / native). Issue 30's target is a
ratio of at least 0.9; the verdict is computed from the measurements.

  /usr/bin/python3 benchmarks/consumer_flags/bench_consumer_flags.py build/release
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, **kw):
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(cmd)}\n{result.stdout}")
    return result.stdout


def cpu_name():
    with open("/proc/cpuinfo") as f:
        text = f.read()
    model = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
    flags = re.search(r"^flags\s*:\s*(.*)$", text, re.M).group(1).split()
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model.group(1) if model else 'unknown CPU'} ({isa})"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("build", help="a configured and built distopt build folder (e.g. build/release)")
    parser.add_argument("--work", help="where to install and build (default: a temporary folder)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each program, alternating (best kept)")
    parser.add_argument("--steps", type=int, default=200, help="training steps per measurement")
    parser.add_argument("--compiler", default="g++")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    work = args.work or tempfile.mkdtemp(prefix="distopt-consumer-flags-")
    prefix = os.path.join(work, "prefix")
    run(["cmake", "--install", args.build, "--prefix", prefix])
    programs = {}
    for variant, flags in (("default", ""), ("native", "-march=native")):
        build = os.path.join(work, variant)
        run(["cmake", "-S", HERE, "-B", build, "-DCMAKE_BUILD_TYPE=Release", f"-DCMAKE_CXX_COMPILER={args.compiler}",
             f"-DCMAKE_PREFIX_PATH={prefix}", "-DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF", f"-DCMAKE_CXX_FLAGS={flags}"])
        run(["cmake", "--build", build, "--parallel", "2"])
        programs[variant] = os.path.join(build, "consumer_speed")

    best, paths = {}, {}
    env = dict(os.environ)
    env.pop("DISTOPT_ISA", None)  # each program takes its default path
    for _ in range(args.repeats):
        for variant, program in programs.items():
            for line in run([program, str(args.steps)], env=env).splitlines():
                workload, speed, path = line.split(" ", 2)
                key = (workload, variant)
                best[key] = max(best.get(key, 0.0), float(speed))
                paths[key] = path

    workloads = sorted({w for w, _ in best}, key=lambda w: list(dict.fromkeys(w for w, _ in best)).index(w))
    print(f"CPU: {cpu_name()}; compiler: {args.compiler}; best of {args.repeats} runs each")
    print(f"{'workload':<22} {'default img/s':>14} {'native img/s':>13} {'ratio':>7}  paths (default / native)")
    figures, worst = [], None
    for w in workloads:
        d, n = best[(w, "default")], best[(w, "native")]
        ratio = d / n
        worst = ratio if worst is None else min(worst, ratio)
        figures.append({"workload": w, "default": d, "native": n, "ratio": ratio,
                        "path_default": paths[(w, "default")], "path_native": paths[(w, "native")]})
        print(f"{w:<22} {d:>14.0f} {n:>13.0f} {ratio:>7.3f}  {paths[(w, 'default')]} / {paths[(w, 'native')]}")
    verdict = "met" if worst >= 0.9 else "NOT met"
    print(f"lowest ratio {worst:.3f}: target >= 0.9 {verdict}")
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump({"cpu": cpu_name(), "compiler": args.compiler, "figures": figures, "lowest_ratio": worst}, f, indent=1)
        os.replace(args.json + ".tmp", args.json)


if __name__ == "__main__":
    main()
