"""The serving function's deployment package, built without Docker: pip for the Lambda platform, pruned.

Layout of the bundle (the function's /var/task), handler `functions/inference/handler.handler`:

    <installed dependencies>     functions/inference/requirements.txt: fastapi, numpy, onnxruntime, ...
    shipml/                      the runtime library, copied from the source tree
    functions/inference/         the handler package (Lambda imports `functions.inference.handler`)
    examples/fraud/contract.yaml the model's contract (settings.contract_path), read at cold start
    examples/fraud/contract.yaml.json   its JSON rendition (shipml.contract.loader.write_rendition):
                                 read instead of the YAML, so a cold start never imports PyYAML

The dependencies are installed with pip's cross-platform options (manylinux wheels for CPython 3.12
on the function's architecture, binary only, nothing compiled), pruned of what serving never
imports, and cached under `.shipml/build/lambda-deps/<key>`, keyed by the requirements file, the
architecture and the prune rules, so only the first synth downloads anything. The bundle's
unzipped size is checked against a budget, and a heavy package (torch, pandas, sklearn, pyarrow)
fails the build.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aws_cdk as cdk
import jsii
from aws_cdk import aws_lambda as lambda_

Architecture = Literal["arm64", "x86_64"]

PYTHON_VERSION = "3.12"
HANDLER = "functions/inference/handler.handler"
REQUIREMENTS = "functions/inference/requirements.txt"
# What is copied from the source tree into the bundle, besides the contract.
SOURCES = ("shipml", "functions/__init__.py", "functions/inference")
# Top-level import names that must never reach the bundle (see DESIGN.md: keep the Lambda bundle lean).
HEAVY_PACKAGES = ("torch", "pandas", "sklearn", "pyarrow")
# Lambda's limit for a function's unzipped deployment package.
LAMBDA_UNZIPPED_LIMIT_MB = 250
# Bump when the install options or prune rules change: it is part of the dependency cache key.
_BUILD_FORMAT = "2"
_PIP_MACHINE = {"arm64": "aarch64", "x86_64": "x86_64"}
_SKIPPED_SOURCE_NAMES = {"__pycache__", "requirements.txt"}
_SKIPPED_SOURCE_SUFFIXES = {".pyc", ".pyo"}
_MB = 1024 * 1024


class BundleError(RuntimeError):
    """The bundle cannot be built, or breaks a rule (size budget, a heavy package)."""


@dataclass(frozen=True)
class PruneRule:
    """Paths (globs relative to the dependency folder) that serving never uses, and why."""

    name: str
    patterns: tuple[str, ...]
    reason: str


# Measured savings for the pinned requirements are in the report that each build writes
# (`prune-report.json` in the cache folder) and in docs/architecture.md.
PRUNE_RULES: tuple[PruneRule, ...] = (
    PruneRule(
        "bytecode", ("**/__pycache__", "**/*.pyc"), "Lambda compiles on import; pip ran with --no-compile"
    ),
    PruneRule("test suites", ("**/tests",), "the packages' own tests are never imported at run time"),
    PruneRule("type stubs", ("**/*.pyi",), "only type checkers read them"),
    PruneRule(
        "numpy build and tooling files",
        ("numpy/_core/include", "numpy/_core/lib", "numpy/f2py", "numpy/_pyinstaller"),
        "C headers, static libraries, the Fortran wrapper generator and PyInstaller hooks",
    ),
    PruneRule(
        "onnxruntime offline tooling",
        ("onnxruntime/tools", "onnxruntime/transformers", "onnxruntime/quantization", "onnxruntime/datasets"),
        "model conversion, optimisation and quantisation tools, and sample models",
    ),
    PruneRule(
        "onnxruntime C API library",
        ("onnxruntime/capi/libonnxruntime.so*",),
        # readelf: onnxruntime_pybind11_state*.so does not list it as NEEDED (the binding links the
        # runtime statically); it is there for C/C++ callers. The bundle test runs a session without it.
        "the Python binding carries its own copy of the runtime",
    ),
)


@dataclass(frozen=True)
class BundleSpec:
    """What goes into a function's bundle and where the build may cache its dependencies."""

    repo_root: Path
    architecture: Architecture
    contract_path: str
    budget_mb: int
    requirements: str = REQUIREMENTS
    sources: tuple[str, ...] = SOURCES
    cache_root: Path | None = None
    # Packages the bundle must not contain. Serving forbids all four heavy ones; the features job
    # needs pyarrow and forbids the rest.
    forbidden: tuple[str, ...] = HEAVY_PACKAGES
    code_dir: str = "functions/inference"

    @property
    def cache_dir(self) -> Path:
        """Where installed-and-pruned dependency folders are kept, one per cache key."""
        return self.cache_root or self.repo_root / ".shipml" / "build" / "lambda-deps"

    @property
    def requirements_path(self) -> Path:
        return self.repo_root / self.requirements


@dataclass
class BundleReport:
    """What one build produced: sizes before and after pruning, the savings per rule, timings."""

    architecture: str
    dependencies_dir: str
    cache_hit: bool
    installed_bytes: int
    pruned_bytes: dict[str, int]
    dependencies_bytes: int
    bundle_bytes: int = 0
    install_seconds: float = 0.0
    bundle_seconds: float = 0.0
    sources: list[str] = field(default_factory=list)
    # The contract's JSON rendition in the bundle, or None where JSON cannot carry the document
    # (its cold starts then import PyYAML and parse the YAML).
    contract_rendition: str | None = None

    @property
    def bundle_mb(self) -> float:
        return self.bundle_bytes / _MB

    def summary(self) -> str:
        """One line for the synth log."""
        saved = sum(self.pruned_bytes.values())
        origin = "cached" if self.cache_hit else f"installed in {self.install_seconds:.1f} s"
        rendition = "" if self.contract_rendition else "; no JSON rendition of the contract (YAML parsed)"
        return (
            f"shipml Lambda bundle ({self.architecture}): {self.bundle_mb:.1f} MB unzipped; dependencies "
            f"{self.installed_bytes / _MB:.1f} MB installed, {saved / _MB:.1f} MB pruned ({origin})"
            + rendition
        )


def pip_platforms(architecture: Architecture) -> list[str]:
    """pip's --platform tags for Lambda (Amazon Linux 2023, glibc 2.34) on the given architecture.

    manylinux_2_28 first: onnxruntime's cp312 wheels exist only with that tag.
    """
    machine = _PIP_MACHINE[architecture]
    return [f"manylinux_2_28_{machine}", f"manylinux2014_{machine}"]


def pip_install_command(requirements: Path, target: Path, architecture: Architecture) -> list[str]:
    """The pip command that installs the pinned requirements for Lambda into `target`."""
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    for platform in pip_platforms(architecture):
        command += ["--platform", platform]
    return [
        *command,
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        PYTHON_VERSION,
        "--no-compile",
        # The requirements file pins every transitive dependency; --no-deps makes a missing pin an
        # import error in the bundle test instead of an unpinned package slipping in.
        "--no-deps",
        "--target",
        str(target),
        "-r",
        str(requirements),
    ]


def dependencies_key(requirements_text: str, architecture: Architecture) -> str:
    """The cache key of an installed-and-pruned dependency folder."""
    rules = json.dumps([(rule.name, rule.patterns) for rule in PRUNE_RULES])
    digest = hashlib.sha256()
    for part in (_BUILD_FORMAT, PYTHON_VERSION, architecture, rules, requirements_text):
        digest.update(part.encode())
        digest.update(b"\0")
    return f"{architecture}-{digest.hexdigest()[:16]}"


def tree_bytes(root: Path) -> int:
    """Total size of the regular files under `root` (what Lambda counts as unzipped size)."""
    return sum(path.lstat().st_size for path in _files(root))


def prune(root: Path, rules: Sequence[PruneRule] = PRUNE_RULES) -> dict[str, int]:
    """Delete what the rules name under `root`; return the bytes each rule removed."""
    saved: dict[str, int] = {}
    for rule in rules:
        removed = 0
        for pattern in rule.patterns:
            for path in sorted(root.glob(pattern), key=lambda p: len(p.parts), reverse=True):
                if not path.exists() and not path.is_symlink():
                    continue  # inside a folder an earlier match removed
                if path.is_dir() and not path.is_symlink():
                    removed += tree_bytes(path)
                    shutil.rmtree(path)
                else:
                    removed += path.lstat().st_size
                    path.unlink()
        saved[rule.name] = removed
    return saved


def heavy_packages(root: Path, names: Sequence[str] = HEAVY_PACKAGES) -> list[str]:
    """The named heavy packages present at the top of `root` (as a package, a module or a dist-info)."""
    found = []
    for name in names:
        dist_prefixes = {name, "scikit_learn"} if name == "sklearn" else {name}
        present = (root / name).exists() or (root / f"{name}.py").exists()
        present = present or any(
            child.name.endswith(".dist-info") and child.name.split("-")[0].lower() in dist_prefixes
            for child in root.iterdir()
        )
        if present:
            found.append(name)
    return found


def install_dependencies(
    spec: BundleSpec, *, run: Callable[[list[str]], None] | None = None
) -> tuple[Path, BundleReport]:
    """The installed-and-pruned dependency folder for `spec`, from the cache or freshly built.

    A fresh build goes into a temporary folder beside the cache entry and is renamed into place
    only when complete, so an interrupted build never leaves a half-filled cache entry.
    """
    requirements = spec.requirements_path
    if not requirements.is_file():
        raise BundleError(f"requirements file not found: {requirements}")
    key = dependencies_key(requirements.read_text(), spec.architecture)
    target = spec.cache_dir / key
    report_path = target / ".bundle-report.json"
    if report_path.is_file():
        report = BundleReport(**json.loads(report_path.read_text()))
        report.cache_hit = True
        return target, report

    spec.cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=spec.cache_dir))
    try:
        started = time.perf_counter()
        (run or _run)(pip_install_command(requirements, staging, spec.architecture))
        install_seconds = time.perf_counter() - started
        installed = tree_bytes(staging)
        pruned = prune(staging)
        found = heavy_packages(staging, spec.forbidden)
        if found:
            raise BundleError(
                f"{requirements} pulls in {', '.join(found)}: the bundle must not contain "
                f"{', '.join(spec.forbidden)}"
            )
        report = BundleReport(
            architecture=spec.architecture,
            dependencies_dir=str(target),
            cache_hit=False,
            installed_bytes=installed,
            pruned_bytes=pruned,
            dependencies_bytes=tree_bytes(staging),
            install_seconds=round(install_seconds, 2),
        )
        (staging / ".bundle-report.json").write_text(json.dumps(report.__dict__, indent=2))
        try:
            staging.rename(target)
        except OSError:
            if not report_path.is_file():  # not a concurrent build that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, report


def source_files(spec: BundleSpec) -> list[str]:
    """The repo-relative paths of the source files copied into the bundle, sorted."""
    found: set[str] = set()
    for entry in (*spec.sources, spec.contract_path):
        path = spec.repo_root / entry
        if path.is_file():
            found.add(entry)
        elif path.is_dir():
            found.update(
                file.relative_to(spec.repo_root).as_posix() for file in _files(path) if _is_source(file)
            )
        else:
            raise BundleError(f"bundle source not found: {path}")
    return sorted(found)


def asset_fingerprint(spec: BundleSpec) -> str:
    """A hash of every input of the bundle: requirements, architecture, prune rules and sources.

    Used as the asset's custom hash, so CDK neither hashes the 100 MB output nor rebuilds a bundle
    that is already staged in cdk.out.
    """
    digest = hashlib.sha256()
    digest.update(dependencies_key(spec.requirements_path.read_text(), spec.architecture).encode())
    digest.update(f"{spec.budget_mb}\0".encode())
    for relative in source_files(spec):
        digest.update(relative.encode() + b"\0")
        digest.update((spec.repo_root / relative).read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def build_bundle(
    spec: BundleSpec, output_dir: Path, *, run: Callable[[list[str]], None] | None = None
) -> BundleReport:
    """Fill `output_dir` with the bundle; raise BundleError if it breaks a rule."""
    started = time.perf_counter()
    dependencies, report = install_dependencies(spec, run=run)
    output_dir.mkdir(parents=True, exist_ok=True)
    # Hard links where the file system allows: the cached tree is never modified, and each test
    # synth then costs milliseconds instead of a 100 MB copy.
    shutil.copytree(
        dependencies,
        output_dir,
        dirs_exist_ok=True,
        copy_function=_link_or_copy,
        ignore=shutil.ignore_patterns(".bundle-report.json"),
    )
    report.sources = source_files(spec)
    for relative in report.sources:
        destination = output_dir / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(spec.repo_root / relative, destination)
    # The contract's JSON rendition, which a cold start reads instead of importing the YAML library.
    from shipml.contract.loader import write_rendition

    rendition = write_rendition(output_dir / spec.contract_path)
    report.contract_rendition = rendition.relative_to(output_dir).as_posix() if rendition else None
    found = heavy_packages(output_dir, spec.forbidden)
    if found:
        raise BundleError(f"the bundle contains {', '.join(found)}; it must not")
    report.bundle_bytes = tree_bytes(output_dir)
    report.bundle_seconds = round(time.perf_counter() - started, 2)
    budget = min(spec.budget_mb, LAMBDA_UNZIPPED_LIMIT_MB)
    if report.bundle_mb > budget:
        raise BundleError(
            f"the bundle is {report.bundle_mb:.1f} MB unzipped, over the budget of {budget} MB "
            f"(setting 'lambda_bundle_budget_mb'); largest entries: {_largest(output_dir)}"
        )
    return report


@jsii.implements(cdk.ILocalBundling)
class LocalPipBundling:
    """CDK local bundling: builds the bundle with pip on this machine, so synth needs no Docker."""

    def __init__(self, spec: BundleSpec, *, log: Callable[[str], None] | None = None) -> None:
        self._spec = spec
        self._log = log or (lambda line: print(line, file=sys.stderr))
        self.last_report: BundleReport | None = None

    def try_bundle(self, output_dir: str, _options: Any = None, **_more: Any) -> bool:
        # Errors are raised, not answered with False: False would make CDK fall back to Docker.
        self.last_report = build_bundle(self._spec, Path(output_dir))
        self._log(self.last_report.summary())
        return True


def serving_code(spec: BundleSpec, bundling: LocalPipBundling | None = None) -> lambda_.Code:
    """The function's code asset, bundled locally (never in Docker) with a hash of its inputs."""
    bundling = bundling or LocalPipBundling(spec)
    return lambda_.Code.from_asset(
        # Only the hash and the bundler read the sources; the path is what CDK stages when a stack
        # is synthesized without bundling (`cdk synth --exclusively` of another stack, tests).
        str(spec.repo_root / spec.code_dir),
        asset_hash=asset_fingerprint(spec),
        asset_hash_type=cdk.AssetHashType.CUSTOM,
        bundling=cdk.BundlingOptions(
            # Never pulled: local bundling always succeeds or raises.
            image=cdk.DockerImage.from_registry("local-bundling-only"),
            local=bundling,
        ),
    )


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BundleError(
            f"pip could not install the serving dependencies (exit {result.returncode}):\n"
            f"{' '.join(command)}\n{result.stderr[-4000:]}"
        )


def _files(root: Path) -> Iterator[Path]:
    for directory, _dirs, names in os.walk(root):
        for name in names:
            path = Path(directory, name)
            if not path.is_symlink() or path.is_file():
                yield path


def _is_source(path: Path) -> bool:
    return not (_SKIPPED_SOURCE_NAMES.intersection(path.parts) or path.suffix in _SKIPPED_SOURCE_SUFFIXES)


def _link_or_copy(source: str, destination: str) -> str:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)
    return destination


def _largest(root: Path, count: int = 5) -> str:
    sizes: dict[str, int] = {}
    for path in _files(root):
        top = path.relative_to(root).parts[0]
        sizes[top] = sizes.get(top, 0) + path.lstat().st_size
    ranked: Iterable[tuple[str, int]] = sorted(sizes.items(), key=lambda item: item[1], reverse=True)
    return ", ".join(f"{name} {size / _MB:.1f} MB" for name, size in list(ranked)[:count])
