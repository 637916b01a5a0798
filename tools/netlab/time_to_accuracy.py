#!/usr/bin/python3
"""Measured time to accuracy over netlab's rate-limited links: synchronous SGD, LocalSGD, DiLoCo
and Streaming DiLoCo, K = 4 hosts, LeNet-5 on Fashion-MNIST, at several link rates.

    sudo /usr/bin/python3 tools/netlab/time_to_accuracy.py --build build/release --out results/netlab

Every run is build/<...>/examples/network_train under netlab (one rank per namespace, one OpenMP
thread each) for a wall-clock budget; its CSV lands in <out>/runs/ and a run whose CSV is there is
not run again (an interrupted study goes on where it stopped). From the runs:
  <out>/runs.csv               every evaluation of every run
  <out>/table.md               per model and rate: each method's final accuracy, its measured and
                               simulated seconds, their ratio, and the time to synchronous SGD's
                               final accuracy, measured and simulated
  <out>/findings.csv           the finding, computed: at 100 Mbit/s Streaming DiLoCo reaches
                               synchronous SGD's final accuracy in less measured wall-clock time
  <out>/time_to_accuracy.png   test accuracy against measured (solid) and simulated (dashed) seconds
The CPU is named in every file (from /proc/cpuinfo). --report only rebuilds the outputs.
"""

import argparse
import csv
import math
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

METHODS = ["sync", "localsgd", "diloco", "streaming"]
LABELS = {"sync": "synchronous SGD (H = 1)", "localsgd": "LocalSGD", "diloco": "DiLoCo", "streaming": "Streaming DiLoCo"}


def cpu_name():
    model, flags = "unknown CPU", ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line
    isa = "AVX-512" if " avx512f" in flags else "AVX2" if " avx2" in flags else "SSE2"
    return f"{model} ({os.cpu_count()} cores, {isa})"


def run_name(model, rate, method):
    return f"{model}_{rate:g}mbit_{method}"


def run_all(args):
    from netlab import Lab  # noqa: E402 (root only: the report needs no namespaces)

    program = os.path.join(args.build, "examples", "network_train")
    if not os.access(program, os.X_OK):
        sys.exit(f"time_to_accuracy: {program} is missing: build it first (cmake --build --preset release --target network_train)")
    runs = os.path.join(args.out, "runs")
    os.makedirs(runs, exist_ok=True)
    budget = {"classic": args.seconds_classic, "hsu": args.seconds_hsu}
    with Lab(args.hosts, args.rates[0]) as lab:
        for rate in args.rates:
            lab.shape(rate)
            for model in args.models:
                for method in args.methods:
                    out = os.path.join(runs, run_name(model, rate, method) + ".csv")
                    if os.path.exists(out):
                        print(f"{out}: done before, kept", flush=True)
                        continue
                    command = [program, "--method", method, "--model", model, "--rate", str(rate), "--seconds",
                               str(budget[model]), "--eval-every", str(budget[model] / args.evaluations), "--h", str(args.h),
                               "--fragments", str(args.fragments), "--delay", str(args.delay), "--alpha", str(args.alpha),
                               "--test-images", str(args.test_images), "--out", out]
                    status = lab.mpirun(command, {"OMP_NUM_THREADS": "1"})
                    if status != 0 and not os.path.exists(out):
                        # Once an orted crashed at start-up (in hwloc_shmem_topology_write, before
                        # our program ran): one more try.
                        print(f"time_to_accuracy: {run_name(model, rate, method)}: mpirun exit {status}, trying again", flush=True)
                        status = lab.mpirun(command, {"OMP_NUM_THREADS": "1"})
                    if status != 0:
                        print(f"time_to_accuracy: {run_name(model, rate, method)} failed (mpirun exit {status})", flush=True)


def read_runs(folder):
    rows = []
    runs = os.path.join(folder, "runs")
    for name in sorted(os.listdir(runs)):
        if not name.endswith(".csv"):
            continue
        with open(os.path.join(runs, name)) as f:
            for r in csv.DictReader(f):
                for key in ("rate_mbit", "measured_seconds", "simulated_seconds", "compute_seconds", "sync_seconds", "wait_seconds", "bytes_per_worker", "train_loss",
                            "test_accuracy"):
                    r[key] = float(r[key])
                for key in ("ranks", "steps", "exchanges"):
                    r[key] = int(r[key])
                rows.append(r)
    return rows


def time_to(curve, target, clock):
    for r in curve:
        if r["test_accuracy"] >= target:
            return r[clock]
    return None


def cell(v, digits=1):
    return "not reached" if v is None else f"{v:.{digits}f}"


def report(args):
    rows = read_runs(args.out)
    if not rows:
        sys.exit(f"time_to_accuracy: no runs under {args.out}/runs")
    cpu = cpu_name()
    curves = {}
    for r in rows:
        curves.setdefault((r["model"], r["rate_mbit"], r["method"]), []).append(r)
    with open(os.path.join(args.out, "runs.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)

    lines = [f"# Time to accuracy over netlab ({cpu})", "",
             f"K = {rows[0]['ranks']} hosts, one rank and one thread each, on network namespaces whose links tbf holds to the rate "
             "(each way); LeNet-5 on Fashion-MNIST (test accuracy on the first "
             f"{args.test_images} test images); H = {args.h}, Streaming DiLoCo P = {args.fragments}, tau = {args.delay}, "
             f"alpha = {args.alpha}. Measured: wall clock, evaluations excluded. Simulated: the trainer's clock, compute measured "
             "in the run and transfers modelled at the link's rate, overlapped as the method overlaps them. Target: synchronous "
             "SGD's final accuracy at the same model and rate.", ""]
    findings = []
    worst = []
    for model in sorted({k[0] for k in curves}):
        for rate in sorted({k[1] for k in curves if k[0] == model}):
            sync = curves.get((model, rate, "sync"))
            target = sync[-1]["test_accuracy"] if sync else None
            lines += [f"## {model} LeNet-5, {rate:g} Mbit/s" + (f" (target {target:.4f})" if target else ""), "",
                      "| method | steps | exchanges | final accuracy | measured s | simulated s | simulated / measured | "
                      "to target, measured s | to target, simulated s |", "|---|---|---|---|---|---|---|---|---|"]
            for method in METHODS:
                c = curves.get((model, rate, method))
                if not c:
                    continue
                last = c[-1]
                ratio = last["simulated_seconds"] / last["measured_seconds"]
                worst.append((abs(ratio - 1), model, rate, method, ratio))
                t_measured = time_to(c, target, "measured_seconds") if target else None
                t_simulated = time_to(c, target, "simulated_seconds") if target else None
                lines.append(f"| {LABELS[method]} | {last['steps']} | {last['exchanges']} | {last['test_accuracy']:.4f} | "
                             f"{last['measured_seconds']:.1f} | {last['simulated_seconds']:.1f} | {ratio:.3f} | {cell(t_measured)} | "
                             f"{cell(t_simulated)} |")
            lines.append("")
            streaming = curves.get((model, rate, "streaming"))
            if sync and streaming and math.isclose(rate, 100.0):
                t_sync = time_to(sync, target, "measured_seconds")
                t_stream = time_to(streaming, target, "measured_seconds")
                holds = t_stream is not None and t_stream < t_sync
                findings.append({"finding": f"Streaming DiLoCo reaches synchronous SGD's accuracy in less wall-clock time at 100 Mbit/s "
                                            f"({model} LeNet-5)",
                                 "holds": "yes" if holds else "no",
                                 "evidence": f"target {target:.4f}: streaming {cell(t_stream)} s, sync {cell(t_sync)} s measured",
                                 "cpu": cpu})
    if worst:
        worst.sort(reverse=True)
        within = sum(1 for w in worst if w[0] <= 0.15)
        lines += [f"Simulated within 15% of measured in {within} of {len(worst)} runs; the furthest: " +
                  ", ".join(f"{m} {r:g} Mbit/s {meth} {ratio:.2f}" for _, m, r, meth, ratio in worst[:3]), ""]
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write("\n".join(lines))
    with open(os.path.join(args.out, "findings.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["finding", "holds", "evidence", "cpu"])
        w.writeheader()
        w.writerows(findings)
    print("\n".join(lines))
    for x in findings:
        print(f"finding: {x['finding']}: {x['holds']} ({x['evidence']})")
    plot(curves, cpu, os.path.join(args.out, "time_to_accuracy.png"))


def plot(curves, cpu, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(k[0], k[1]) for k in curves})
    columns = len({k[1] for k in curves})
    models = sorted({k[0] for k in curves})
    fig, axes = plt.subplots(len(models), columns, figsize=(4.2 * columns, 3.4 * len(models)), squeeze=False)
    rates = sorted({k[1] for k in curves})
    colours = {"sync": "tab:blue", "localsgd": "tab:orange", "diloco": "tab:green", "streaming": "tab:red"}
    for model, rate in panels:
        ax = axes[models.index(model)][rates.index(rate)]
        for method in METHODS:
            c = curves.get((model, rate, method))
            if not c:
                continue
            ax.plot([r["measured_seconds"] for r in c], [r["test_accuracy"] for r in c], "-o", ms=3, color=colours[method],
                    label=LABELS[method])
            ax.plot([r["simulated_seconds"] for r in c], [r["test_accuracy"] for r in c], "--", color=colours[method], alpha=0.6)
        ax.set_title(f"{model} LeNet-5, {rate:g} Mbit/s", fontsize=9)
        ax.set_xlabel("seconds (solid measured, dashed simulated)", fontsize=8)
        ax.set_ylabel("test accuracy", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"netlab, K = 4 hosts, Fashion-MNIST; {cpu}", fontsize=9)
    fig.tight_layout()
    partial = path + ".partial.png"
    fig.savefig(partial, dpi=110)
    os.replace(partial, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default="build/release")
    parser.add_argument("--out", default="results/netlab")
    parser.add_argument("--rates", type=lambda s: [float(v) for v in s.split(",")], default=[10.0, 100.0, 1000.0])
    parser.add_argument("--models", type=lambda s: s.split(","), default=["classic", "hsu"])
    parser.add_argument("--methods", type=lambda s: s.split(","), default=METHODS)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--seconds-classic", type=float, default=60.0)
    parser.add_argument("--seconds-hsu", type=float, default=120.0)
    parser.add_argument("--evaluations", type=int, default=6, help="evaluations per run")
    parser.add_argument("--h", type=int, default=16)
    parser.add_argument("--fragments", type=int, default=2)
    parser.add_argument("--delay", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--test-images", type=int, default=5000)
    parser.add_argument("--report", action="store_true", help="only rebuild the outputs from <out>/runs")
    args = parser.parse_args()
    for m in args.methods:
        if m not in METHODS:
            sys.exit(f"time_to_accuracy: unknown method '{m}' ({', '.join(METHODS)})")
    if not args.report:
        run_all(args)
    report(args)


if __name__ == "__main__":
    main()
