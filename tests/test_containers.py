"""Static checks of the container images and the pins they install (no Docker or Apptainer needed).

- every base image and every configured image is pinned by digest;
- every version written anywhere (requirements.txt, the container locks, envs/, containers/) is constraints.txt's;
- the locks cover constraints.txt, every line hashed, every file fit for the images' CPython 3.11 on glibc 2.35;
- the CPU and CUDA definitions run the same install script and differ only in base image and torch index;
- profiles/gpu-apptainer only uses options Snakemake knows;
- Apptainer deployment (--use-singularity) without an image or without apptainer stops in one line before any job;
  a .sif image's sha256 reaches every measuring job's provenance (through a stand-in `apptainer` that runs the job's
  command on the host); `make image` without apptainer says why in one line.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import parse_wheel_filename
from packaging.version import Version

from joulebench import images, jobs
from joulebench.preflight import PREFIX

from .conftest import ROOT

CONTAINERS = ROOT / "containers"
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
PIN = re.compile(r"(?<![\w.\-{}])([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][0-9A-Za-z.+!_-]*)")
IMAGE_SCHEMES = ("docker://", "oras://", "library://", "shub://", "docker-daemon://")
PAIRS = [("joulebench.def", "joulebench-cpu.def"), ("Dockerfile", "Dockerfile.cpu")]
INDEX = re.compile(r"TORCH_INDEX_URL=(https://download\.pytorch\.org/whl/([a-z0-9]+))\b")
INSTALL = "bash /opt/joulebench/containers/install.sh"
# What pip accepts in the images: CPython 3.11 on x86_64 Ubuntu 22.04 (glibc 2.35).
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(35, 4, -1)]
PLATFORMS += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
IMAGE_TAGS = {*cpython_tags((3, 11), ["cp311"], PLATFORMS), *compatible_tags((3, 11), "cp311", PLATFORMS)}


def norm(name: str) -> str:
    """PEP 503: lower case, runs of -, _ and . are one -."""
    return re.sub(r"[-_.]+", "-", name).lower()


def public(version: str) -> str:
    """torch==2.13.0+cu130 pins the 2.13.0 release (PEP 440 local label dropped)."""
    return version.split("+", 1)[0]


def pins(path: Path) -> list[tuple[str, str, int]]:
    """(name, version, line) of every `name==version` written in the file, comments included."""
    return [(m.group(1), m.group(2).rstrip(".,"), number)
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            for m in PIN.finditer(line)]


def constraints() -> dict[str, str]:
    found: dict[str, str] = {}
    for name, version, number in pins(ROOT / "constraints.txt"):
        assert found.setdefault(norm(name), version) == version, f"constraints.txt:{number} pins {name} twice"
    return found


def lock_entries(path: Path) -> list[tuple[str, str, list[str], str]]:
    """(name, version, sha256 hashes, file named in the comment) per requirement of a pip requirements file."""
    entries, logical, comment = [], "", ""
    for line in path.read_text(encoding="utf-8").splitlines():
        body, _, note = line.partition("#")
        if note.strip().endswith((".whl", ".tar.gz", ".zip")) and logical:
            comment = note.strip()
        logical += " " + body.strip().rstrip("\\")
        if body.rstrip().endswith("\\"):
            continue
        tokens = logical.split()
        logical = ""
        if tokens:
            name, _, version = tokens[0].partition("==")
            hashes = [t.split(":", 1)[1] for t in tokens[1:] if t.startswith("--hash=sha256:")]
            entries.append((name, version, hashes, comment))
            comment = ""
    return entries


def definition_files() -> list[Path]:
    return sorted(p for p in CONTAINERS.iterdir() if p.suffix == ".def" or re.fullmatch(r"Dockerfile(\.cpu)?", p.name))


def bases(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    pattern = r"^From:\s*(\S+)" if path.suffix == ".def" else r"^FROM\s+(?:--platform=\S+\s+)?(\S+)"
    return re.findall(pattern, text, flags=re.MULTILINE | (0 if path.suffix == ".def" else re.IGNORECASE))


def image_strings(node, key: str = ""):
    """Every string in a YAML tree that names an image: under a `container` key, or with an image URI scheme."""
    if isinstance(node, dict):
        for k, value in node.items():
            yield from image_strings(value, str(k))
    elif isinstance(node, list):
        for value in node:
            yield from image_strings(value, key)
    elif isinstance(node, str):
        for part in node.split():
            name, _, value = part.partition("=")
            if name == "container" and value:  # `config: [container=...]` in a profile
                yield value
            elif part.startswith(IMAGE_SCHEMES) or (key == "container" and part == node):
                yield part


def test_every_base_image_is_pinned_by_digest():
    files = definition_files()
    assert {p.name for p in files} >= {"joulebench.def", "joulebench-cpu.def", "Dockerfile", "Dockerfile.cpu"}
    for path in files:
        found = bases(path)
        assert found, f"{path.name}: no base image"
        for image in found:
            assert DIGEST.search(image), f"{path.name}: base {image} is not pinned by @sha256:<64 hex>"


def test_configured_images_are_pinned_by_digest():
    for path in [ROOT / "config.yaml", *sorted((ROOT / "configs").glob("*.yaml"))]:
        image = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("container")
        assert image is None or DIGEST.search(str(image)), f"{path.name}: container {image} has no digest"
    profiles = sorted((ROOT / "profiles").glob("*/config.yaml"))
    assert ROOT / "profiles" / "gpu-apptainer" / "config.yaml" in profiles
    for path in profiles:
        for image in image_strings(yaml.safe_load(path.read_text(encoding="utf-8"))):
            assert DIGEST.search(image), f"{path.relative_to(ROOT)}: image {image} has no digest"


def test_requirements_are_pinned_and_a_subset_of_constraints():
    wanted = constraints()
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    lines = [line for line in lines if line]
    assert lines and all("==" in line for line in lines), "requirements.txt: every requirement pinned with =="
    for name, version, number in pins(ROOT / "requirements.txt"):
        assert wanted.get(norm(name)) == version, f"requirements.txt:{number}: {name}=={version} not in constraints.txt"


def test_every_written_version_agrees_with_constraints():
    wanted = constraints()
    files = [ROOT / "requirements.txt", ROOT / "envs" / "joulebench.yaml",
             *sorted(p for p in CONTAINERS.rglob("*") if p.is_file())]
    wrong = [f"{path.relative_to(ROOT)}:{number}: {name}=={version}, constraints.txt has {wanted[norm(name)]}"
             for path in files for name, version, number in pins(path)
             if norm(name) in wanted and public(version) != wanted[norm(name)]]
    assert not wrong, "\n".join(wrong)


def test_locks_cover_constraints_every_line_hashed_for_the_images_python():
    wanted = constraints()
    locks = {path.name: lock_entries(path) for path in sorted(CONTAINERS.glob("*.lock"))}
    assert {"build.lock", "requirements.lock", "torch-cpu.lock"} <= set(locks)
    for lock, entries in locks.items():
        names = [norm(name) for name, *_ in entries]
        assert len(names) == len(set(names)), f"{lock}: a package is listed twice"
        for name, version, hashes, filename in entries:
            assert version and hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), (
                f"{lock}: {name} needs ==version and --hash=sha256: (the images install with --require-hashes)")
            if filename.endswith(".whl"):
                check_wheel_fits(lock, name, version, filename)
    common = {norm(name) for name, *_ in locks["requirements.lock"]}
    tools = {norm(name) for name, *_ in locks["build.lock"]}
    assert common == set(wanted) - {"torch"} - tools, (
        f"requirements.lock vs constraints.txt: missing {sorted(set(wanted) - {'torch'} - tools - common)}, "
        f"extra {sorted(common - set(wanted))}; run containers/make_locks.py")
    # pip, setuptools, and what builds llama-cpp-python's sdist without build isolation
    assert tools == {"pip", "setuptools", "scikit-build-core", "pathspec", "packaging"}
    for lock in (name for name in locks if name.startswith("torch-")):
        variant = lock[len("torch-"):-len(".lock")]
        torch = [(name, version) for name, version, *_ in locks[lock] if norm(name) == "torch"]
        assert torch == [("torch", f"{wanted['torch']}+{variant}")], f"{lock}: pins {torch}"
        assert not {norm(name) for name, *_ in locks[lock]} & (common | tools), f"{lock} repeats a shared pin"


def check_wheel_fits(lock: str, name: str, version: str, filename: str) -> None:
    wheel_name, wheel_version, _, tags = parse_wheel_filename(filename)
    assert norm(wheel_name) == norm(name) and wheel_version == Version(version), f"{lock}: {filename} is not {name}"
    assert tags & IMAGE_TAGS, f"{lock}: {filename} does not install on CPython 3.11, x86_64, glibc 2.35"


def test_cpu_and_cuda_definitions_share_the_install_script_and_locks():
    variants = {}
    for cuda_name, cpu_name in PAIRS:
        texts = {}
        for name in (cuda_name, cpu_name):
            text = (CONTAINERS / name).read_text(encoding="utf-8")
            (index,) = INDEX.findall(text)
            (base,) = bases(CONTAINERS / name)
            assert text.count(INSTALL) == 1, f"{name}: runs {INSTALL} once"
            variants.setdefault(name.endswith(("cpu", "cpu.def")), set()).add((base, index))
            lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
            texts[name] = "\n".join(lines).replace(base, "<base>").replace(index[0], "<index>")
        assert texts[cuda_name] == texts[cpu_name], f"{cuda_name} and {cpu_name} differ beyond base and torch index"
    # The Dockerfile and the Apptainer definition of one variant build the same image.
    assert all(len(found) == 1 for found in variants.values()), variants
    ((cuda_base, (_, cuda)),), ((cpu_base, (_, cpu)),) = variants[False], variants[True]
    assert cpu == "cpu" and not cpu_base.startswith("nvidia/")
    major, minor = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-[\w.-]*ubuntu22\.04@.*", cuda_base).groups()
    assert cuda == f"cu{major}{minor}", f"torch index {cuda} does not match the CUDA {major}.{minor} base"
    assert cpu_base.startswith("ubuntu:22.04@"), "both images run on Ubuntu 22.04 (glibc 2.35, as the locks assume)"
    for variant in (cuda, cpu):
        assert (CONTAINERS / f"torch-{variant}.lock").is_file(), f"no containers/torch-{variant}.lock"


def test_definitions_copy_what_install_sh_reads():
    install = (CONTAINERS / "install.sh").read_text(encoding="utf-8")
    for needed in ("containers/build.lock", "containers/requirements.lock", "containers/torch-$VARIANT.lock",
                   "envs/system-packages.sh", "joulebench/wordnet.py", "--require-hashes", "pip check"):
        assert needed in install, f"install.sh no longer uses {needed}"
    for path in definition_files():
        text = path.read_text(encoding="utf-8")
        copied = re.findall(r"^\s*(?:COPY\s+)?(\S+)\s+/opt/joulebench/\S+$", text, flags=re.MULTILINE)
        assert set(copied) == {"containers", "envs/system-packages.sh", "joulebench/wordnet.py"}, path.name
        assert all((ROOT / source).exists() for source in copied)
        ignore = path.with_name(path.name + ".dockerignore")
        if path.suffix != ".def":
            kept = {line[1:].rstrip("/") for line in ignore.read_text().splitlines() if line.startswith("!")}
            assert kept == set(copied), f"{ignore.name} must let exactly the copied files into the build context"
    version = re.search(r"^PYTHON_VERSION=(\d+\.\d+)\.\d+$", install, flags=re.MULTILINE)
    assert version and re.search(r"^PYTHON_SHA256=[0-9a-f]{64}$", install, flags=re.MULTILINE)
    env = yaml.safe_load((ROOT / "envs" / "joulebench.yaml").read_text(encoding="utf-8"))
    assert f"python={version[1]}" in env["dependencies"], "envs/joulebench.yaml and the images use one Python"
    (pip_part,) = [item["pip"] for item in env["dependencies"] if isinstance(item, dict)]
    assert {"-r ../requirements.txt", "-c ../constraints.txt"} <= set(pip_part)


def test_gpu_apptainer_profile_uses_known_snakemake_options():
    cli = pytest.importorskip("snakemake.cli")
    known = {s.lstrip("-") for action in cli.get_argument_parser()._actions for s in action.option_strings}
    profile = yaml.safe_load((ROOT / "profiles" / "gpu-apptainer" / "config.yaml").read_text(encoding="utf-8"))
    assert set(profile) <= known, f"unknown options: {sorted(set(profile) - known)}"
    assert profile["software-deployment-method"] == "apptainer"
    assert "--nv" in profile["apptainer-args"].split()
    resources = dict(item.split("=") for item in profile["resources"])
    assert resources["energy_window"] == "1" and int(resources["gpu"]) >= 1
    assert "gpu=0" in profile["default-resources"]


# --- running the jobs in the image (--use-singularity) -----------------------------------------------------------

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
VENV_BIN = str(Path(sys.executable).parent)
HOST_PATH = os.pathsep.join((VENV_BIN, "/usr/bin", "/bin"))  # snakemake's python and the tools it calls (`which`)
URI = "docker://ghcr.io/owner/joulebench@sha256:" + "ab" * 32
# Apptainer's stand-in: `--version`, and `exec --home DIR [args] IMAGE SHELL -c CMD` runs CMD on the host as the image
# would, with APPTAINER_CONTAINER set as Apptainer sets it; each call's image and PYTHONPATH go to $FAKE_APPTAINER_LOG.
FAKE_APPTAINER = """#!/bin/bash
if [ "$1" = --version ]; then echo "apptainer version 1.3.4"; exit 0; fi
args=("$@"); n=${#args[@]}
echo "${args[n-4]} $PYTHONPATH" >> "$FAKE_APPTAINER_LOG"
APPTAINER_CONTAINER=${args[n-4]} exec /bin/bash -c "${args[n-1]}"
"""

FAILING_APPTAINER = "#!/bin/sh\nexit 3\n"


def micro(**changes) -> dict:
    return {**yaml.safe_load((ROOT / "configs" / "micro.yaml").read_text()), **changes}


def fake_apptainer(folder: Path, script: str = FAKE_APPTAINER) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "apptainer").write_text(script)
    (folder / "apptainer").chmod(0o755)
    return folder


def snakemake(workdir: Path, flags: list[str], config: dict | None, path: str) -> subprocess.CompletedProcess:
    """The real `snakemake` on the checkout's Snakefile from `workdir` (config.yaml there, written from `config`
    unless None), with its own Hugging Face cache and PATH."""
    if config is not None:
        (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    hf = workdir / "hf"
    env = {**os.environ, "PATH": path, "HF_HOME": str(hf), "HF_HUB_CACHE": str(hf / "hub"),
           "HF_DATASETS_CACHE": str(hf / "datasets"), "FAKE_APPTAINER_LOG": str(workdir / "apptainer.log")}
    command = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), *flags]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


# (id, command-line flags, config (None: the checkout's config.yaml, as in a fresh clone), the one line's start,
#  what else it says). `--configfile` is left out where the fresh clone's command has none.
STOPS = [
    ("fresh-clone-dry-run", ["-n", "--cores", "all", "--use-singularity"], None,
     "container: null, but --use-singularity", "make image"),
    ("sdm-apptainer", ["--cores", "all", "--sdm", "apptainer"], micro(),
     "container: null, but --use-singularity", "docker://…@sha256:<64 hex>"),
    ("software-deployment-method", ["-n", "--cores", "1", "--software-deployment-method", "apptainer"], micro(),
     "container: null, but --use-singularity", "container: joulebench.sif"),
    ("no-apptainer-executable", ["--cores", "1", "--use-singularity"], micro(container=URI),
     f"container: {URI} needs the apptainer executable", "neither is on PATH"),
    ("sif-missing", ["--cores", "1", "--use-singularity"], micro(container="images/absent.sif"),
     "container: images/absent.sif is not an image file", "does not exist"),
]  # fmt: skip


def run_stop(case: tuple, workdir: Path) -> subprocess.CompletedProcess:
    name, flags, config, *_ = case
    if config is None:
        shutil.copy(ROOT / "config.yaml", workdir / "config.yaml")
    path = HOST_PATH
    if name == "sif-missing":  # apptainer is there (so only the image is missing); it fails should a job start
        path = f"{fake_apptainer(workdir / 'bin', FAILING_APPTAINER)}:{path}"
    return snakemake(workdir, flags, config, path)


@pytest.fixture(scope="module")
def stops(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    workdirs = {case[0]: tmp_path_factory.mktemp(case[0]).resolve() for case in STOPS}
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {case[0]: pool.submit(run_stop, case, workdirs[case[0]]) for case in STOPS}
        return {name: (workdirs[name], future.result()) for name, future in futures.items()}


@pytest.mark.integration
@pytest.mark.parametrize("case", STOPS, ids=[case[0] for case in STOPS])
def test_apptainer_deployment_that_cannot_run_stops_in_one_line_before_any_job(case, stops):
    name, _, _, start, says = case
    if name == "no-apptainer-executable" and any(shutil.which(tool, path=HOST_PATH) for tool in images.EXECUTABLES):
        pytest.skip("apptainer is installed on this machine")
    workdir, result = stops[name]
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output and "WorkflowError" not in output, output[-3000:]
    # Snakemake's own notice of the workflow profile comes first; then nothing but the one line.
    lines = [line for line in output.splitlines() if line and not line.startswith("Using workflow specific profile")]
    assert len(lines) == 1 and lines[0].startswith(PREFIX), lines
    assert lines[0].removeprefix(PREFIX).startswith(start) and says in lines[0], lines[0]
    assert not (workdir / "results").exists() and not (workdir / "apptainer.log").exists()


@pytest.mark.integration
def test_without_apptainer_deployment_the_configured_image_is_unused(tmp_path):
    config = micro(container="images/absent.sif")
    result = snakemake(tmp_path, ["-n", "--cores", "1"], config, os.environ["PATH"])
    output = result.stdout + result.stderr
    assert result.returncode == 0 and PREFIX not in output and "rule finetune:" in output, output[-3000:]
    assert not (tmp_path / "results").exists()


@pytest.mark.integration
def test_a_sif_images_sha256_reaches_the_provenance_of_a_job_run_in_it(tmp_path):
    """The embedded model's build, a measuring job, run "in" a fake .sif by the stand-in apptainer."""
    image = tmp_path / "images" / "joulebench.sif"
    image.parent.mkdir()
    image.write_bytes(b"SIF stand-in " * 1000)
    path = f"{fake_apptainer(tmp_path / 'bin')}{os.pathsep}{HOST_PATH}"
    target = "results/models/rca/tiny-llama/pretrain.json"
    result = snakemake(tmp_path, ["--cores", "2", "--use-singularity", target],
                       micro(container="images/joulebench.sif"), path)  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    recorded = json.loads((tmp_path / target).read_text())["provenance"]["container"]
    assert recorded == {"image": str(image), "sha256": hashlib.sha256(image.read_bytes()).hexdigest(),
                        "apptainer_container": str(image)}  # fmt: skip
    # every job ran through apptainer, with the checkout first on PYTHONPATH (the image holds no joulebench)
    calls = (tmp_path / "apptainer.log").read_text().splitlines()
    assert len(calls) == 3 and all(call.split(" ", 1) == [str(image), call.split(" ", 1)[1]] for call in calls)
    assert all(call.split(" ", 1)[1].split(os.pathsep)[0] == str(ROOT) for call in calls), calls


def test_a_sif_is_hashed_once_per_version_of_the_file(tmp_path, monkeypatch):
    image = tmp_path / "joulebench.sif"
    image.write_bytes(b"one")
    digests = []
    real = hashlib.file_digest
    monkeypatch.setattr(hashlib, "file_digest", lambda *args: digests.append(1) or real(*args))
    first = images.identity("joulebench.sif", tmp_path)
    assert first == {"image": str(image), "sha256": hashlib.sha256(b"one").hexdigest()}
    assert images.identity(str(image), tmp_path) == first and len(digests) == 1  # remembered in .snakemake
    assert (tmp_path / images.HASHES).is_file()
    image.write_bytes(b"other")
    assert images.identity("joulebench.sif", tmp_path)["sha256"] == hashlib.sha256(b"other").hexdigest()
    assert len(digests) == 2
    assert images.identity(URI, tmp_path) == {"image": URI} and len(digests) == 2  # a reference: nothing to read
    assert images.identity(None, tmp_path) is None


def test_job_provenance_and_the_report_record_the_image(tmp_path, monkeypatch):
    identity = {"image": "/srv/joulebench.sif", "sha256": "c" * 64}
    monkeypatch.setattr(jobs, "_image", identity)
    monkeypatch.setenv("APPTAINER_CONTAINER", "/srv/joulebench.sif")
    record = tmp_path / "train.json"
    with jobs.failures_recorded(str(record), {"dataset": "d", "job": "finalists"}, lambda: None):
        raise RuntimeError("boom")
    provenance = json.loads(record.read_text())["provenance"]
    assert provenance["container"] == {**identity, "apptainer_container": "/srv/joulebench.sif"}
    info = jobs.run_info({}, {"energy": {}})
    assert info["container_image"] == "/srv/joulebench.sif" and info["container_digest"] == "sha256:" + "c" * 64
    monkeypatch.setattr(jobs, "_image", None)
    monkeypatch.delenv("APPTAINER_CONTAINER")
    monkeypatch.delenv("SINGULARITY_CONTAINER", raising=False)
    assert images.provenance(None) == {} and "container_image" not in jobs.run_info({}, {"energy": {}})


def test_every_job_that_writes_provenance_is_given_the_image():
    """A rule whose job writes provenance passes IMAGE as its `image` param, and its script hands it to job_context."""
    writer = re.compile(r"\b(provenance|failures_recorded|software_and_hardware|run_info)\(")
    writes = {name for name, fn in inspect.getmembers(jobs, inspect.isfunction)
              if fn.__module__ == jobs.__name__ and writer.search(inspect.getsource(fn))}  # fmt: skip
    given, needing = set(), set()
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        for rule, body in re.findall(r"^(?:rule|checkpoint) (\w+):\n((?:[ \t]+.*\n|\n)+)", smk.read_text(), re.M):
            script = re.search(r'script:\s*"\.\./scripts/(\w+\.py)"', body)
            if "image=IMAGE" in body:
                given.add(rule)
            if script:
                text = (ROOT / "scripts" / script[1]).read_text()
                imported = set(re.findall(r"\w+", re.search(r"from joulebench\.jobs import (.*)", text)[1]))
                if imported & writes:
                    needing.add(rule)
                    assert "image=sm.params.image" in text, f"scripts/{script[1]} does not pass the image on"
    assert {"embedded_model", "finetune", "evaluate", "probe_reference", "finalists", "report"} <= needing
    assert given == needing


def test_make_image_without_apptainer_says_why_in_one_line(tmp_path):
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make")
    out = tmp_path / "joulebench.sif"
    # nothing on PATH: no apptainer, no singularity; and not a sub-make of `make test` (no "Entering directory" lines)
    env = {**{k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")},
           "PATH": str(tmp_path)}  # fmt: skip
    result = subprocess.run([make, "image", f"IMAGE={out}"], cwd=ROOT, capture_output=True, text=True, env=env)
    lines = (result.stdout + result.stderr).splitlines()
    assert result.returncode != 0 and len(lines) == 1, lines
    assert "make image: no apptainer (or singularity) on PATH" in lines[0] and "apptainer.org" in lines[0], lines[0]
    assert not list(tmp_path.glob("joulebench.sif*"))


def test_make_image_builds_beside_and_renames(tmp_path):
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make")
    log = tmp_path / "calls"
    script = f"""#!/bin/sh\necho "$@" >> {log}\nfor a; do case "$a" in *.part) echo image > "$a";; esac; done\n"""
    bin_dir = fake_apptainer(tmp_path / "bin", script)
    out = tmp_path / "joulebench.sif"
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    result = subprocess.run([make, "image", f"IMAGE={out}"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert log.read_text().split() == ["build", "--force", f"{out}.part", "containers/joulebench.def"]
    assert out.read_text() == "image\n" and not (tmp_path / "joulebench.sif.part").exists()
