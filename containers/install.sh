#!/usr/bin/env bash
# The one install script of all four image definitions (joulebench.def, Dockerfile: CUDA; joulebench-cpu.def,
# Dockerfile.cpu: CPU). They differ only in their base image and in TORCH_INDEX_URL, which picks torch's lock:
# containers/torch-<last part of the URL>.lock. Runs as root during the build, on Ubuntu 22.04, from the copy of the
# repository files under /opt/joulebench that the definitions make. Every Python package comes from a hashed lock
# and is installed with --require-hashes; `pip check` then proves the set complete.
set -euo pipefail
: "${TORCH_INDEX_URL:?set TORCH_INDEX_URL, e.g. https://download.pytorch.org/whl/cu130}"
SRC=/opt/joulebench
VARIANT=${TORCH_INDEX_URL%/}
VARIANT=${VARIANT##*/}
TORCH_LOCK=$SRC/containers/torch-$VARIANT.lock
[ -f "$TORCH_LOCK" ] || { echo "no lock $TORCH_LOCK for $TORCH_INDEX_URL" >&2; exit 1; }

# CPython from python.org's release tarball, checked against its sha256: Ubuntu 22.04's own python3.11 package is
# 3.11.0rc1. The hash is the one pyenv's python-build records for Python-3.11.17.tar.xz (pyenv/pyenv,
# plugins/python-build/share/python-build/3.11.17); other public Dockerfiles that build 3.11.17 pin the same.
PYTHON_VERSION=3.11.17
PYTHON_SHA256=bfb74ad39efae27cda510f134ab408e00f9992c56851cfc0b1cdb5646da11599
PYTHON_PREFIX=/opt/python
VENV=/opt/venv

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Build tools stay in the image: Triton compiles its CUDA launcher with the C compiler at run time.
apt-get install -y -qq --no-install-recommends ca-certificates curl xz-utils build-essential cmake libssl-dev zlib1g-dev \
    libbz2-dev liblzma-dev libffi-dev libsqlite3-dev libreadline-dev uuid-dev >/dev/null
bash "$SRC/envs/system-packages.sh"  # WordNet, poppler, Pango: the same list `make` installs

curl -fsSL -o /tmp/python.tar.xz "https://www.python.org/ftp/python/$PYTHON_VERSION/Python-$PYTHON_VERSION.tar.xz"
echo "$PYTHON_SHA256  /tmp/python.tar.xz" | sha256sum -c -
mkdir /tmp/python-src
tar -xJf /tmp/python.tar.xz -C /tmp/python-src --strip-components=1
(cd /tmp/python-src && ./configure --prefix="$PYTHON_PREFIX" --with-ensurepip=install >/dev/null \
    && make -j"$(nproc)" >/dev/null && make altinstall >/dev/null)
rm -rf /tmp/python.tar.xz /tmp/python-src
"$PYTHON_PREFIX/bin/python3.11" -c "import bz2, ctypes, lzma, readline, sqlite3, ssl, uuid, zlib"

"$PYTHON_PREFIX/bin/python3.11" -m venv "$VENV"
pip_install() { "$VENV/bin/python" -m pip install --no-cache-dir --disable-pip-version-check --require-hashes "$@"; }
pip_install --no-deps -r "$SRC/containers/build.lock"  # pip and setuptools first: setuptools builds the two sdists
# llama-cpp-python compiles llama.cpp here: for any x86-64 CPU the image may run on (not this builder's), on CPU
# kernels only: the CUDA base is a runtime image without nvcc (README: "Inference backends").
CMAKE_ARGS="-DGGML_NATIVE=OFF" pip_install --no-deps --no-build-isolation -r "$SRC/containers/requirements.lock"
pip_install --no-deps --extra-index-url "$TORCH_INDEX_URL" -r "$TORCH_LOCK"
"$VENV/bin/python" -m pip check

"$VENV/bin/python" "$SRC/joulebench/wordnet.py"  # WordNet for METEOR, into $VENV/nltk_data (see `make setup`)
"$VENV/bin/python" -c "
import sys, torch
from nltk.corpus import wordnet
assert wordnet.synsets('dog'), 'NLTK cannot read WordNet'
print('joulebench image: python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)
"
apt-get clean
rm -rf /var/lib/apt/lists/*
