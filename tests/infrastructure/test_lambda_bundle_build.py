"""The bundle builder's rules, with a fake pip: cache, prune, heavy packages, budget. No network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shipml.contract.loader import rendition_path
from shipml.errors import ContractError
from stacks import lambda_bundle
from stacks.lambda_bundle import BundleError, BundleSpec

CONTRACT = "examples/fraud/contract.yaml"
REPO = Path(__file__).resolve().parents[2]


def _repo(tmp_path: Path) -> Path:
    """A tiny source tree shaped like ours: requirements, the library, the handler, a contract."""
    root = tmp_path / "repo"
    (root / "functions" / "inference").mkdir(parents=True)
    (root / "functions" / "__init__.py").write_text("")
    (root / "functions" / "inference" / "__init__.py").write_text("")
    (root / "functions" / "inference" / "handler.py").write_text(
        "def handler(event, context):\n    return 1\n"
    )
    (root / "functions" / "inference" / "requirements.txt").write_text("numpy==2.4.6\n")
    (root / "functions" / "inference" / "__pycache__").mkdir()
    (root / "functions" / "inference" / "__pycache__" / "handler.cpython-311.pyc").write_bytes(b"x")
    (root / "shipml").mkdir()
    (root / "shipml" / "__init__.py").write_text("")
    (root / "examples" / "fraud").mkdir(parents=True)
    (root / CONTRACT).write_bytes((REPO / CONTRACT).read_bytes())
    return root


class FakePip:
    """Stands in for `pip install --target DIR`: writes the given files and records each call."""

    def __init__(self, files: dict[str, int]) -> None:
        self.files = files
        self.calls: list[list[str]] = []

    def __call__(self, command: list[str]) -> None:
        self.calls.append(command)
        target = Path(command[command.index("--target") + 1])
        for relative, size in self.files.items():
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\0" * size)


LEAN_PACKAGE = {
    "numpy/__init__.py": 1_000,
    "numpy/_core/_multiarray_umath.cpython-312-aarch64-linux-gnu.so": 200_000,
    "numpy/_core/tests/test_big.py": 50_000,
    "numpy/__init__.pyi": 3_000,
    "numpy/_core/include/numpy/ndarraytypes.h": 7_000,
    "onnxruntime/capi/onnxruntime_pybind11_state.cpython-312-aarch64-linux-gnu.so": 300_000,
    "onnxruntime/capi/libonnxruntime.so.1.31.1": 250_000,
    "onnxruntime/tools/convert.py": 9_000,
    "numpy-2.4.6.dist-info/METADATA": 500,
}


def _spec(root: Path, *, budget_mb: int = 150, architecture: str = "arm64") -> BundleSpec:
    return BundleSpec(
        repo_root=root,
        architecture=architecture,  # type: ignore[arg-type]
        contract_path=CONTRACT,
        budget_mb=budget_mb,
        cache_root=root / ".shipml" / "build" / "lambda-deps",
    )


def test_pip_installs_cp312_binary_wheels_for_the_function_architecture(tmp_path: Path) -> None:
    command = lambda_bundle.pip_install_command(Path("req.txt"), tmp_path, "arm64")

    assert command[command.index("--python-version") + 1] == "3.12"
    platforms = [command[i + 1] for i, arg in enumerate(command) if arg == "--platform"]
    assert platforms == ["manylinux_2_28_aarch64", "manylinux2014_aarch64"]
    assert {"--only-binary=:all:", "--no-compile", "--no-deps"} <= set(command)
    assert lambda_bundle.pip_platforms("x86_64") == ["manylinux_2_28_x86_64", "manylinux2014_x86_64"]


def test_build_prunes_caches_and_lays_out_the_bundle(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    pip = FakePip(LEAN_PACKAGE)

    report = lambda_bundle.build_bundle(_spec(root), tmp_path / "out", run=pip)

    out = tmp_path / "out"
    assert (out / "functions" / "inference" / "handler.py").is_file()
    assert (out / CONTRACT).is_file() and (out / "shipml" / "__init__.py").is_file()
    assert rendition_path(out / CONTRACT).is_file()  # read at a cold start instead of the YAML
    assert report.contract_rendition == f"{CONTRACT}.json"
    assert "rendition" not in report.summary()
    assert not (out / "functions" / "inference" / "requirements.txt").exists()
    assert not list(out.glob("**/__pycache__"))
    # Pruned: tests, stubs, headers, tooling, the unused C API library; kept: the extension modules.
    assert not (out / "numpy" / "_core" / "tests").exists() and not (out / "numpy" / "__init__.pyi").exists()
    assert not (out / "numpy" / "_core" / "include").exists() and not (out / "onnxruntime" / "tools").exists()
    assert not (out / "onnxruntime" / "capi" / "libonnxruntime.so.1.31.1").exists()
    assert (
        out / "onnxruntime" / "capi" / "onnxruntime_pybind11_state.cpython-312-aarch64-linux-gnu.so"
    ).exists()
    assert (out / "numpy-2.4.6.dist-info" / "METADATA").exists()
    assert report.pruned_bytes["test suites"] == 50_000
    assert report.pruned_bytes["onnxruntime C API library"] == 250_000
    assert report.installed_bytes == sum(LEAN_PACKAGE.values())
    assert report.bundle_bytes == lambda_bundle.tree_bytes(out)
    assert report.cache_hit is False and len(pip.calls) == 1


def test_an_invalid_contract_fails_the_build_not_a_cold_start(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    (root / CONTRACT).write_text("model: fraud\n")

    with pytest.raises(ContractError, match=r"contract.yaml: invalid contract:\n  id: Field required"):
        lambda_bundle.build_bundle(_spec(root), tmp_path / "out", run=FakePip(LEAN_PACKAGE))


def test_a_second_build_reuses_the_cache_and_a_new_pin_does_not(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    pip = FakePip(LEAN_PACKAGE)
    lambda_bundle.build_bundle(_spec(root), tmp_path / "first", run=pip)

    again = lambda_bundle.build_bundle(_spec(root), tmp_path / "second", run=pip)

    assert again.cache_hit is True and len(pip.calls) == 1
    (root / "functions" / "inference" / "requirements.txt").write_text("numpy==2.4.7\n")
    lambda_bundle.build_bundle(_spec(root), tmp_path / "third", run=pip)
    lambda_bundle.build_bundle(_spec(root, architecture="x86_64"), tmp_path / "fourth", run=pip)
    assert len(pip.calls) == 3


def test_the_asset_hash_follows_every_input(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    before = lambda_bundle.asset_fingerprint(_spec(root))

    assert lambda_bundle.asset_fingerprint(_spec(root)) == before
    assert lambda_bundle.asset_fingerprint(_spec(root, architecture="x86_64")) != before
    (root / "shipml" / "predict.py").write_text("# changed\n")
    assert lambda_bundle.asset_fingerprint(_spec(root)) != before
    # Bytecode caches are not inputs.
    changed = lambda_bundle.asset_fingerprint(_spec(root))
    (root / "shipml" / "__pycache__").mkdir()
    (root / "shipml" / "__pycache__" / "predict.cpython-311.pyc").write_bytes(b"y")
    assert lambda_bundle.asset_fingerprint(_spec(root)) == changed


def test_a_heavy_package_fails_the_build_and_is_not_cached(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    pip = FakePip({**LEAN_PACKAGE, "pandas/__init__.py": 10, "pandas-3.1.1.dist-info/METADATA": 10})

    with pytest.raises(BundleError, match=r"pulls in pandas: the bundle must not contain torch, pandas"):
        lambda_bundle.build_bundle(_spec(root), tmp_path / "out", run=pip)

    assert not [p for p in _spec(root).cache_dir.iterdir() if not p.name.startswith(".")]


def test_over_budget_fails_with_the_size_the_budget_and_the_largest_entries(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    pip = FakePip(
        {
            **LEAN_PACKAGE,
            "onnxruntime/capi/onnxruntime_pybind11_state.cpython-312-aarch64-linux-gnu.so": 3 * 2**20,
        }
    )

    with pytest.raises(
        BundleError, match=r"3\.\d MB unzipped, over the budget of 1 MB.*largest entries: onnxruntime"
    ):
        lambda_bundle.build_bundle(_spec(root, budget_mb=1), tmp_path / "out", run=pip)


def test_a_pip_failure_is_reported_with_its_command(tmp_path: Path) -> None:
    root = _repo(tmp_path)

    def failing_pip(command: list[str]) -> None:
        lambda_bundle._run(["false"])

    with pytest.raises(BundleError, match=r"pip could not install the serving dependencies \(exit 1\)"):
        lambda_bundle.build_bundle(_spec(root), tmp_path / "out", run=failing_pip)
    assert not [p for p in _spec(root).cache_dir.iterdir() if not p.name.startswith(".")]


def test_the_cache_entry_records_what_was_pruned(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    lambda_bundle.build_bundle(_spec(root), tmp_path / "out", run=FakePip(LEAN_PACKAGE))

    (entry,) = _spec(root).cache_dir.iterdir()
    recorded = json.loads((entry / ".bundle-report.json").read_text())
    assert recorded["pruned_bytes"]["type stubs"] == 3_000
    assert not (tmp_path / "out" / ".bundle-report.json").exists()
