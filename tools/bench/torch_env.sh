#!/usr/bin/env bash
# Runs a command, or sets up the current shell, with LibTorch/PyTorch using a chosen OpenBLAS.
#
#   tools/bench/torch_env.sh <mode> <command...>    run one command in that environment
#   source tools/bench/torch_env.sh <mode>          export it into the current shell
#   tools/bench/torch_env.sh <mode> --check         show what a process would load, then exit
#
# LibTorch (libtorch_cpu.so) and numpy need libblas.so.3/liblapack.so.3, which Debian resolves
# through update-alternatives (/usr/lib/x86_64-linux-gnu/libblas.so.3 -> /etc/alternatives/...).
# The modes below prepend a build's own directory to LD_LIBRARY_PATH instead, so the choice holds
# for the commands run here only and the system alternatives are never touched. (Torch's
# convolutions run in oneDNN; the Linear layers' matrix products go through this BLAS, and an
# idle pthread OpenBLAS pool spinning beside torch's OpenMP threads slows everything on few cores.)
#
# Modes
#   installed  what a fresh Debian machine with libtorch-dev gets: apt's recommended libopenblas0
#              is libopenblas0-pthread (alternatives priority 100, above openmp's 95), with
#              OpenBLAS's own core detection and its own thread pool (OPENBLAS_NUM_THREADS unset:
#              one thread per core, whatever torch.set_num_threads says).
#   tuned      the OpenMP build of OpenBLAS (libopenblas0-openmp), which runs in torch's OpenMP
#              threads and follows torch.set_num_threads, with OPENBLAS_CORETYPE set to the
#              widest kernels this CPU runs (read from /proc/cpuinfo): SkylakeX with AVX-512F,
#              Zen on an AMD CPU with AVX2, Haswell on another with AVX2, and OpenBLAS's own
#              detection otherwise.
#   reference  Debian's reference BLAS (netlib libblas3), what `--no-install-recommends` gives.
#   system     no change: whatever the alternatives currently point to.
# Every mode but `system` unsets OPENBLAS_CORETYPE, OPENBLAS_NUM_THREADS, GOTO_NUM_THREADS and
# OPENBLAS_VERBOSE first, so that nothing from the caller's shell leaks in; OMP_* are left alone
# (the benchmarks set their thread counts themselves).
#
# Needs libopenblas0-pthread and libopenblas0-openmp (scripts/setup-deps --tools). Verify with
# --check, which prints the BLAS the dynamic loader resolves for libtorch_cpu and the core type
# OpenBLAS selects (OPENBLAS_VERBOSE=2); the benchmarks also print the BLAS they actually loaded.
#
# Examples (from the repository root)
#   tools/bench/torch_env.sh installed /usr/bin/python3 tools/bench/torch_lenet.py
#   tools/bench/torch_env.sh tuned     /usr/bin/python3 tools/bench/torch_lenet.py
#   tools/bench/torch_env.sh tuned     build/release/benchmarks/bench_lenet

_torch_env_usage() {
  sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  echo "modes: installed | tuned | reference | system   (see the comment at the top of the file)"
}

# _torch_env_apply <mode>: exports the environment of <mode> into the current shell.
_torch_env_apply() {
  local libdir=/usr/lib/x86_64-linux-gnu dir=
  case "$1" in
    installed) dir=$libdir/openblas-pthread ;;
    tuned) dir=$libdir/openblas-openmp ;;
    reference) dir=$libdir/blas ;;
    system) return 0 ;;
    *) echo "torch_env.sh: unknown mode '$1'" >&2; _torch_env_usage >&2; return 2 ;;
  esac
  if [[ ! -e $dir/libblas.so.3 ]]; then
    echo "torch_env.sh: $dir/libblas.so.3 is missing (scripts/setup-deps --tools)" >&2
    return 1
  fi
  unset OPENBLAS_CORETYPE OPENBLAS_NUM_THREADS GOTO_NUM_THREADS OPENBLAS_VERBOSE
  # The reference BLAS lives in blas/ and its LAPACK in lapack/; OpenBLAS ships both in one dir.
  local path=$dir
  [[ $1 == reference ]] && path=$libdir/blas:$libdir/lapack
  export LD_LIBRARY_PATH=$path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  if [[ $1 == tuned ]]; then
    local core
    core=$(_torch_env_core_type)
    [[ -n $core ]] && export OPENBLAS_CORETYPE=$core
  fi
  export DISTOPT_TORCH_ENV=$1
  return 0
}

# _torch_env_core_type: the OpenBLAS core type of the widest kernels this CPU can run ("" to let
# OpenBLAS detect it).
_torch_env_core_type() {
  local flags vendor
  flags=$(grep -m 1 '^flags' /proc/cpuinfo 2>/dev/null || true)
  vendor=$(grep -m 1 '^vendor_id' /proc/cpuinfo 2>/dev/null || true)
  if [[ " $flags " == *" avx512f "* ]]; then
    echo SkylakeX
  elif [[ " $flags " == *" avx2 "* && $vendor == *AuthenticAMD* ]]; then
    echo Zen
  elif [[ " $flags " == *" avx2 "* ]]; then
    echo Haswell
  fi
}

# _torch_env_check: what libtorch_cpu would load here, and the core OpenBLAS would pick.
_torch_env_check() {
  local torch_cpu
  torch_cpu=$(ls /usr/lib/x86_64-linux-gnu/libtorch_cpu.so.* 2>/dev/null | head -n 1)
  echo "mode: ${DISTOPT_TORCH_ENV:-system}"
  echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH-}  OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE-}"
  if [[ -n $torch_cpu ]]; then
    ldd "$torch_cpu" | grep -E 'lib(blas|lapack)\.so' | sed "s|^\s*|$(basename "$torch_cpu"): |"
  fi
  # OpenBLAS prints "Core: <name>" when it initialises with OPENBLAS_VERBOSE=2; the reference BLAS
  # prints nothing.
  OPENBLAS_VERBOSE=2 /usr/bin/python3 -c 'import ctypes; ctypes.CDLL("libblas.so.3")' 2>&1 |
    sed 's/^/OpenBLAS /'
}

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
  # Sourced: change the caller's shell, nothing else (no set -e there).
  if (($# != 1)); then
    _torch_env_usage >&2
  else
    _torch_env_apply "$1"
  fi
  unset -f _torch_env_usage _torch_env_apply _torch_env_check _torch_env_core_type
  return 0 2>/dev/null
fi

set -euo pipefail
if (($# < 2)); then
  case "${1-}" in -h|--help) _torch_env_usage; exit 0 ;; esac
  _torch_env_usage >&2
  exit 2
fi
_torch_env_apply "$1"
shift
if [[ $1 == --check ]]; then
  _torch_env_check
  exit 0
fi
exec "$@"
