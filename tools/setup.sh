#!/usr/bin/env bash
# Set up netspec in ./.venv (creating it if needed), with the `train` extra (scikit-learn's digits,
# matplotlib's curves). With --test, also install the test tools, and the `cluster` (Dask) and
# `parquet` (pyarrow) extras that netspec predict's tests use.
# Installs graphviz's `dot` (needed for diagrams) through apt-get when it is missing and we are root.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
as_root() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }
apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }
apt_updated=false
apt_update() { $apt_updated || { apt-get update -qq >/dev/null && apt_updated=true; }; }

if ! command -v dot >/dev/null 2>&1; then
  if as_root; then
    echo "setup: installing graphviz (dot) with apt-get" >&2
    apt_update && apt_install graphviz
  else
    echo "setup: note: graphviz's 'dot' is missing; install it for diagrams (sudo apt-get install graphviz)" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  if ! "$python" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    if as_root; then  # Debian keeps venv support in a separate package
      echo "setup: installing python3-venv with apt-get" >&2
      apt_update && apt_install python3-venv
      "$python" -m venv .venv
    else
      echo "setup: error: '$python -m venv' failed; install python3-venv (sudo apt-get install python3-venv)" >&2
      exit 1
    fi
  fi
fi

extra="[train]"  # (netspec train's demo data and curves: the README's commands use them)
# the tests also run predict on a Dask cluster and write Parquet
[ "${1:-}" = "--test" ] && extra="[test,train,cluster,parquet]"
echo "setup: installing netspec${extra} into .venv" >&2
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extra}"

# Compile ahead what a first run of a zoo spec would compile (its kernels, and its program at batch 1),
# into netspec's cache (~/.cache/netspec/numba): minutes the first time, seconds once cached.
# NETSPEC_NO_WARM=1 skips it (the first runs then compile what they need).
if [ -z "${NETSPEC_NO_WARM:-}" ]; then
  echo "setup: compiling the CPU kernels of the zoo ahead (cached for later runs)" >&2
  .venv/bin/python tools/warm.py
fi
