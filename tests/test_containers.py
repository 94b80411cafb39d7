"""Static checks of the container images and the pins they install (no Docker or Apptainer needed).

- every base image and every configured image is pinned by digest;
- every version written anywhere (requirements.txt, the container locks, envs/, containers/) is constraints.txt's;
- the locks cover constraints.txt, every line hashed, every file fit for the images' CPython 3.11 on glibc 2.35;
- the CPU and CUDA definitions run the same install script and differ only in base image and torch index;
- profiles/gpu-apptainer only uses options Snakemake knows.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import parse_wheel_filename
from packaging.version import Version

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
    assert tools == {"pip", "setuptools"}
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
