"""Layers point one way, and the deployment side runs without torch.

config/codec <- kernels <- runtime <- pipeline <- export / train / evaluate <- cli: checked statically on
every import statement (inside functions too), and dynamically by importing every torch-free module, and
running ``predict --onnx`` and ``eval --onnx`` end to end, in fresh interpreters where torch cannot load.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from hhrnet import samples

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "hhrnet": ROOT / "hhrnet",
    "hhrnet.kernels": ROOT / "kernels",
    "hhrnet.export": ROOT / "export",
    "hhrnet.benchmarks": ROOT / "benchmarks",
}

# modules a deployment machine imports: they must load with torch (and onnx) absent
TORCH_FREE = [
    "hhrnet",
    "hhrnet.codec",
    "hhrnet.config",
    "hhrnet.datasets",
    "hhrnet.graphs",
    "hhrnet.errors",
    "hhrnet.io",
    "hhrnet.images",
    "hhrnet.deps",
    "hhrnet.environment",
    "hhrnet.evaluate",
    "hhrnet.inference",
    "hhrnet.load",
    "hhrnet.predict",
    "hhrnet.visualize",
    "hhrnet.samples",
    "hhrnet.data.synth",
    "hhrnet.runtime",
    "hhrnet.runtime.artifact",
    "hhrnet.runtime.ort",
    "hhrnet.runtime.tensorrt",
    "hhrnet.kernels.params",
    "hhrnet.kernels.peaks",
    "hhrnet.kernels.munkres",
    "hhrnet.kernels.group",
    "hhrnet.kernels.refine",
    "hhrnet.kernels.decode",
    "hhrnet.kernels.reference",
    "hhrnet.kernels.aggregate",
    "hhrnet.cli.app",
    "hhrnet.cli.common",
    "hhrnet.cli.output",
    "hhrnet.cli.predict",
    "hhrnet.cli.eval",
    "hhrnet.cli.info",
    "hhrnet.cli.export",
    "hhrnet.cli.bench",
]

BLOCK = "import sys\nfor _m in ('torch', 'onnx', 'onnxscript', 'tensorboard'):\n    sys.modules[_m] = None\n"


def _modules(packages: Mapping[str, Path] = PACKAGES) -> dict[str, Path]:
    """Every module of ``packages`` (package name -> source folder) by its dotted name."""
    out = {}
    for pkg, root in packages.items():
        for path in root.rglob("*.py"):
            rel = path.relative_to(root).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([pkg, *parts])] = path
    return out


def _imports(path: Path, module: str) -> set[str]:
    """Every module an import statement in ``path`` names (absolute; relative ones resolved)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(module.split(".")[: -node.level] + ([base] if base else []))
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names}
    return names


def _violations(
    prefix: str, forbidden: tuple[str, ...], allow: tuple[str, ...] = (), packages: Mapping[str, Path] = PACKAGES
) -> list[str]:
    """``module imports name`` for every module under ``prefix`` (but not ``allow``) naming a ``forbidden`` one."""
    bad = []
    for module, path in _modules(packages).items():
        if not module.startswith(prefix) or module.startswith(allow):
            continue
        for name in _imports(path, module):
            if name.startswith(forbidden):
                bad.append(f"{module} imports {name}")
    return sorted(bad)


def test_layers_point_one_way() -> None:
    assert (
        _violations(
            "hhrnet.kernels",
            (
                "torch",
                "hhrnet.config",
                "hhrnet.codec",
                "hhrnet.inference",
                "hhrnet.runtime",
                "hhrnet.export",
                "hhrnet.benchmarks",
            ),
        )
        == []
    )
    assert (
        _violations(
            "hhrnet.runtime",
            ("torch", "onnx.", "hhrnet.export", "hhrnet.inference", "hhrnet.load", "hhrnet.benchmarks", "hhrnet.cli"),
        )
        == []
    )
    assert [v for v in _violations("hhrnet.runtime", ("onnx",)) if not v.endswith("onnxruntime")] == []
    assert _violations("hhrnet.codec", ("torch", "hhrnet.inference", "hhrnet.runtime", "hhrnet.export")) == []
    library = ("hhrnet.cli", "hhrnet.benchmarks", "hhrnet.export", "hhrnet.kernels")
    assert _violations("hhrnet", ("hhrnet.benchmarks",), allow=library) == []
    assert _violations("hhrnet", ("hhrnet.cli",), allow=("hhrnet.cli", "hhrnet.__main__")) == []
    assert _violations("hhrnet", ("hhrnet.export",), allow=("hhrnet.export", "hhrnet.cli", "hhrnet.benchmarks")) == []


def test_leaf_modules_import_no_library_module_but_the_leaves() -> None:
    """The graph table and the dataset facts are read from every floor, the kernels included: they may import
    only the other leaves (choices, errors) and the standard library."""
    leaves = ("hhrnet.choices", "hhrnet.errors", "hhrnet.datasets", "hhrnet.graphs")
    for leaf in leaves:
        names = _imports(_modules()[leaf], leaf)
        assert {n for n in names if n.startswith("hhrnet") and not n.startswith(leaves)} == set(), leaf
        assert not {n.split(".")[0] for n in names} & {"numpy", "torch", "numba", "cv2", "onnx"}, leaf


def test_the_layer_check_can_fail(tmp_path: Path) -> None:
    """The finder run on a planted tree: imports inside functions, relative imports, nested packages, allow."""
    files = {
        "kern/__init__.py": "",
        "kern/clean.py": "import numpy as np\nfrom . import peaks\n",
        "kern/deep/__init__.py": "",
        "kern/deep/bad.py": "import numpy\n\n\ndef f():\n    from hhrnet.config import preset\n    import torch.nn\n",
        "lib/__init__.py": "",
        "lib/runtime/__init__.py": "",
        "lib/runtime/ort.py": "from ..export import onnx\n",
        "lib/export/__init__.py": "",
        "lib/export/onnx.py": "import torch\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    planted = {"hhrnet": tmp_path / "lib", "hhrnet.kernels": tmp_path / "kern"}
    assert set(_modules(planted)) == {
        "hhrnet",
        "hhrnet.runtime",
        "hhrnet.runtime.ort",
        "hhrnet.export",
        "hhrnet.export.onnx",
        "hhrnet.kernels",
        "hhrnet.kernels.clean",
        "hhrnet.kernels.deep",
        "hhrnet.kernels.deep.bad",
    }
    assert _violations("hhrnet.kernels", ("torch", "hhrnet.config"), packages=planted) == [
        "hhrnet.kernels.deep.bad imports hhrnet.config",
        "hhrnet.kernels.deep.bad imports hhrnet.config.preset",
        "hhrnet.kernels.deep.bad imports torch.nn",
    ]
    assert _violations("hhrnet.runtime", ("torch", "hhrnet.export"), packages=planted) == [
        "hhrnet.runtime.ort imports hhrnet.export",
        "hhrnet.runtime.ort imports hhrnet.export.onnx",
    ]
    assert _violations("hhrnet", ("torch",), packages=planted) == [
        "hhrnet.export.onnx imports torch",
        "hhrnet.kernels.deep.bad imports torch.nn",
    ]
    assert _violations("hhrnet", ("torch",), allow=("hhrnet.export", "hhrnet.kernels"), packages=planted) == []


def _run_blocked(code: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CI="true", NUMBA_DISABLE_CUDA="1")
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True, cwd=cwd, env=env)


def test_every_torch_free_module_imports_without_torch() -> None:
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in TORCH_FREE)
    code += "print(sorted(m for m in ('torch', 'onnx') if sys.modules.get(m) is not None))"
    proc = _run_blocked(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_blocking_is_real() -> None:
    proc = _run_blocked("import torch")
    assert proc.returncode != 0 and "import of torch halted" in proc.stderr


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_export import TINY_128, tiny_model

    from hhrnet.export.onnx import export_onnx

    model, cfg = tiny_model(TINY_128)
    return export_onnx(model, cfg, tmp_path_factory.mktemp("onnx") / "m.onnx").path


def _cli_blocked(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return _run_blocked(f"from hhrnet.cli.app import main\nsys.exit(main({args!r}))", cwd=cwd)


def test_predict_and_eval_run_without_torch(exported: Path, tmp_path: Path) -> None:
    coco = samples.folder("coco")
    proc = _cli_blocked(["predict", str(coco), "--onnx", str(exported), "--out", str(tmp_path / "out")], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "4/4 files predicted" in proc.stdout
    doc = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert len(doc["predictions"]) == 4 and doc["failures"] == []
    assert len((tmp_path / "out" / "predictions.jsonl").read_text().splitlines()) == 4
    ann = str(samples.annotation_file("coco"))
    proc = _cli_blocked(
        [
            "eval",
            "--onnx",
            str(exported),
            "--images",
            str(coco),
            "--annotations",
            ann,
            "--json",
            str(tmp_path / "m.json"),
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert set(metrics["stats"]) >= {"AP", "AR"} and "cpu_flags" in metrics["environment"]
    assert metrics["images"] == 4


def test_torch_commands_say_they_need_torch(tmp_path: Path) -> None:
    proc = _cli_blocked(["predict", str(samples.folder("coco")), "--checkpoint", "x.pth", "--out", "o"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: the torch backend (--checkpoint) needs PyTorch")
