#!/usr/bin/python3
"""A network on one machine: K Linux network namespaces on a bridge, every link held to a rate by
tbf, and an MPI job across them (distopt's netlab).

    sudo /usr/bin/python3 tools/netlab/netlab.py run --hosts 4 --rate 100 -- \\
        build/release/examples/network_train --method streaming --out /tmp/run.csv

Layout: a hub namespace holds a bridge; host namespaces dnl<id>-h0 .. h<K-1> each have one veth
(eth0, 10.213.<id % 200>.<k + 1>/24) whose peer is a bridge port in the hub. tbf shapes both
directions of every link (eth0's egress in the host, the port's egress in the hub) to the rate,
with a 200 ms latency and a burst of max(256 kB, rate / 50): smaller ones made OpenMPI's TCP fail.
The addresses exist only inside the namespaces this script made; nothing is added to the
machine's own namespace, so no traffic can leave them. mpirun runs in h0; its rsh agent starts
each remote daemon with `ip netns exec <host> sh -c ...`.

Everything made is removed at the end, on an error and on SIGINT/SIGTERM (the processes left in
the namespaces are killed first). Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for namespaces):
without it the script stops with a message before touching anything. ./scripts/test never runs it.
"""

import argparse
import atexit
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMPI_MCA_rmaps_base_oversubscribe": "1"}


def sh(*args, check=True, capture=False):
    return subprocess.run(list(args), check=check, text=True, stdout=subprocess.PIPE if capture else None,
                          stderr=subprocess.PIPE if capture else None)


class Lab:
    """K namespaces on a bridge; a context manager that removes all of it."""

    def __init__(self, hosts, rate_mbit):
        if hosts < 2:
            sys.exit("netlab: --hosts must be at least 2")
        if rate_mbit <= 0:
            sys.exit("netlab: --rate must be positive (Mbit/s)")
        if os.geteuid() != 0:
            sys.exit("netlab: network namespaces need root (CAP_NET_ADMIN, CAP_SYS_ADMIN): run it with sudo; nothing was changed")
        for tool in ("ip", "tc", "mpirun"):
            if shutil.which(tool) is None:
                sys.exit(f"netlab: '{tool}' is not on PATH (Debian: iproute2, openmpi-bin)")
        self.id = os.getpid() % 100000
        self.prefix = f"dnl{self.id}"
        self.hub = f"{self.prefix}-hub"
        self.hosts = [f"{self.prefix}-h{k}" for k in range(hosts)]
        self.subnet = ipaddress.ip_network(f"10.213.{self.id % 200}.0/24")
        self.addresses = [str(self.subnet.network_address + k + 1) for k in range(hosts)]
        self.rate_mbit = rate_mbit
        self.made = []  # namespaces, in the order made
        self.folder = tempfile.mkdtemp(prefix=f"{self.prefix}-")
        self.cleaned = False

    def __enter__(self):
        atexit.register(self.cleanup)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        try:
            self._build()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc):
        self.cleanup()
        return False

    def _on_signal(self, signum, _frame):
        self.cleanup()
        sys.exit(128 + signum)

    def _netns(self, name):
        sh("ip", "netns", "add", name)
        self.made.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def _build(self):
        existing = sh("ip", "netns", "list", capture=True).stdout
        if self.prefix in existing:
            sys.exit(f"netlab: namespaces named {self.prefix}-* exist already; remove them or run again")
        self._netns(self.hub)
        sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        for k, (host, address) in enumerate(zip(self.hosts, self.addresses)):
            self._netns(host)
            port = f"p{k}"
            sh("ip", "-n", self.hub, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", host)
            sh("ip", "-n", self.hub, "link", "set", port, "master", "br0", "up")
            sh("ip", "-n", host, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0")
            sh("ip", "-n", host, "link", "set", "eth0", "up")
        self.shape(self.rate_mbit)
        with open(os.path.join(self.folder, "hostfile"), "w") as f:
            for address in self.addresses:
                f.write(f"{address} slots=1\n")
        agent = os.path.join(self.folder, "agent")
        mapping = "\n".join(f'  {a}) ns={h} ;;' for a, h in zip(self.addresses, self.hosts))
        with open(agent, "w") as f:
            f.write("#!/bin/sh\n# netlab's rsh agent: runs the command in the namespace of the host address given.\n"
                    'host="$1"; shift\ncase "$host" in\n' + mapping +
                    '\n  *) echo "netlab agent: unknown host $host" >&2; exit 1 ;;\nesac\n'
                    'exec ip netns exec "$ns" sh -c "$*"\n')
        os.chmod(agent, 0o755)
        self.agent = agent

    def shape(self, rate_mbit):
        """tbf at `rate_mbit` on both directions of every link (replacing what was there)."""
        self.rate_mbit = rate_mbit
        burst = max(262144, int(rate_mbit * 1e6 / 8 / 50))
        for k, host in enumerate(self.hosts):
            for ns, dev in ((host, "eth0"), (self.hub, f"p{k}")):
                sh("tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{rate_mbit}mbit", "burst", str(burst),
                   "latency", "200ms")

    def mpirun(self, command, extra_env=None):
        """Runs `command` (a list) on every host, one rank each; returns mpirun's exit status."""
        env = dict(os.environ, **ENV, **(extra_env or {}))
        subnet = str(self.subnet)
        args = ["ip", "netns", "exec", self.hosts[0], "mpirun", "--hostfile", os.path.join(self.folder, "hostfile"),
                "-n", str(len(self.hosts)), "--mca", "plm_rsh_agent", self.agent, "--mca", "btl", "tcp,self",
                "--mca", "oob_tcp_if_include", subnet, "--mca", "btl_tcp_if_include", subnet,
                "--mca", "mpi_yield_when_idle", "1", "--bind-to", "none"]
        for name in sorted(set(ENV) | set(extra_env or {})):
            args += ["-x", name]
        args += command
        return subprocess.run(args, env=env).returncode

    def cleanup(self):
        if self.cleaned:
            return
        self.cleaned = True
        for name in reversed(self.made):
            pids = subprocess.run(["ip", "netns", "pids", name], text=True, capture_output=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        time.sleep(0.2 if self.made else 0)
        for name in reversed(self.made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.made = []
        shutil.rmtree(self.folder, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one command across the namespaces")
    run.add_argument("--hosts", type=int, default=4)
    run.add_argument("--rate", type=float, default=100.0, help="Mbit/s of every link, each way")
    run.add_argument("argv", nargs=argparse.REMAINDER, help="-- program and its arguments")
    args = parser.parse_args()
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        sys.exit("netlab run: give the program after --")
    with Lab(args.hosts, args.rate) as lab:
        print(f"netlab: {len(lab.hosts)} hosts {', '.join(lab.addresses)} at {args.rate:g} Mbit/s each way", flush=True)
        status = lab.mpirun(argv, {"OMP_NUM_THREADS": "1"})
    sys.exit(status)


if __name__ == "__main__":
    main()
