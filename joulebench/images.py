"""The image the jobs run in (config key `container`): where Apptainer is, and what names the image in provenance.

`container` is a registry reference pinned by digest (docker://…@sha256:<64 hex>, oras://…) or a local `.sif` file.
The workflow works out the image's identity once per Snakemake start (rules/common.smk) and hands it to every job
that writes provenance as a param: for a `.sif`, its sha256 (cached by path, size and modification time, so a re-run
or a cluster job's own start does not read a multi-GB image again); for a reference, the reference itself, whose
digest already names the image.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from joulebench.io import atomic_write_json

EXECUTABLES = ("apptainer", "singularity")  # what Snakemake looks for, in its order
INSTALL_URL = "https://apptainer.org/docs/admin/main/installation.html"
HASHES = Path(".snakemake") / "joulebench" / "image-sha256.json"  # in the working directory


def apptainer() -> str | None:
    """The Apptainer (or Singularity) executable on PATH, as Snakemake finds it; None without one."""
    return next((found for name in EXECUTABLES if (found := shutil.which(name))), None)


def is_local(reference: str) -> bool:
    """A file path rather than a registry URI (docker://, oras://, ...)."""
    return "://" not in reference


def local_path(reference: str, workdir: Path) -> Path:
    """A local image as the jobs' Apptainer opens it: `~` expanded, relative to the working directory, absolute."""
    path = Path(reference).expanduser()
    return path if path.is_absolute() else workdir / path


def for_rules(reference: str | None, workdir: Path) -> str | None:
    """What the rules' `container:` directive gets: a local image as an absolute path (Snakemake expands no `~`)."""
    if reference is None or not is_local(reference):
        return reference
    return str(local_path(reference, workdir))


def code_importable(basedir: str, environ: MutableMapping[str, str]) -> None:
    """Put the checkout first on PYTHONPATH: the image holds the locked environment, not the workflow's code, and
    Snakemake puts only scripts/ on a job's path. Apptainer passes the host's environment into the job, and mounts the
    working directory (the checkout, when run from it; bind it with --apptainer-args "--bind <checkout>" otherwise)."""
    paths = [basedir, *(p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != basedir)]
    environ["PYTHONPATH"] = os.pathsep.join(paths)


def identity(reference: str | None, workdir: Path) -> dict[str, str] | None:
    """What a job's provenance records about the image: {image, sha256} for a local file, {image} for a reference."""
    if reference is None:
        return None
    if not is_local(reference):
        return {"image": reference}
    path = local_path(reference, workdir)
    return {"image": str(path), "sha256": sha256(path, workdir / HASHES)}


def sha256(path: Path, cache: Path | None = None) -> str:
    """The file's sha256, remembered in `cache` under its resolved path with its size and modification time."""
    path = path.resolve()
    stat = path.stat()
    seen = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    known = _remembered(cache) if cache is not None else {}
    entry = known.get(str(path))
    if isinstance(entry, dict) and {k: entry.get(k) for k in seen} == seen and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    if cache is not None:
        with contextlib.suppress(OSError):  # a read-only working directory just hashes again next time
            atomic_write_json(cache, {**known, str(path): {**seen, "sha256": digest}})
    return digest


def _remembered(cache: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        known = json.loads(cache.read_text(encoding="utf-8"))
        if isinstance(known, dict):
            return known
    return {}


def provenance(identity: Mapping[str, str] | None, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The `container` entry of a job's provenance: the configured image's identity (when the workflow ran the jobs
    under Apptainer) and the image file Apptainer actually ran the job from (for a pulled docker:// image, Snakemake's
    .snakemake/singularity/<md5 of the URI>.simg); {} for a job that ran on the host."""
    env = os.environ if environ is None else environ
    running = env.get("APPTAINER_CONTAINER") or env.get("SINGULARITY_CONTAINER")
    entry = {**(identity or {}), **({"apptainer_container": running} if running else {})}
    return {"container": entry} if entry else {}
