"""Trainer: overfitting, NaN guard, exact resume, kill -9 safety, 2-process DDP on CPU, CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hhrnet.config import Config, apply_overrides, preset
from hhrnet.data.synth import synthesize
from hhrnet.errors import TrainingError

SMALL = ["data.input_size=128", "data.output_size=[32,64]", "train.images_per_gpu=4", "train.val_every=0",
         "train.print_freq=1000", "train.workers=0"]  # fmt: skip


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    synthesize(root, num_train=16, num_val=4, image_size=128, seed=2)
    return root


def _cfg(*extra: str) -> Config:
    return apply_overrides(preset("tiny"), [*SMALL, *extra])


def test_tiny_model_overfits_a_few_images(data_root: Path) -> None:
    from hhrnet.data.coco import build_dataset, collate
    from hhrnet.losses import HigherHRNetLoss
    from hhrnet.model import build_model
    from hhrnet.train import train_one_epoch

    cfg = _cfg()
    dataset = build_dataset(cfg, "train", root=data_root, augment=False, seed=0)
    batch = collate([dataset[i] for i in range(4)])
    torch.manual_seed(0)
    model = build_model(cfg)
    criterion = HigherHRNetLoss(cfg.loss, 17)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    first = train_one_epoch(model, criterion, optimizer, None, [batch], epoch=0, device=torch.device("cpu"),
                            amp="none", channels_last=False, print_freq=1000)  # fmt: skip
    later = train_one_epoch(model, criterion, optimizer, None, [batch] * 150, epoch=1, device=torch.device("cpu"),
                            amp="none", channels_last=False, print_freq=1000)  # fmt: skip
    last = train_one_epoch(model, criterion, optimizer, None, [batch], epoch=2, device=torch.device("cpu"),
                           amp="none", channels_last=False, print_freq=1000)  # fmt: skip
    assert later.steps == 150
    assert first.loss / last.loss > 4.0, (first.loss, last.loss)


def test_nan_loss_stops_with_step(data_root: Path, tmp_path: Path) -> None:
    from hhrnet.train import train

    with pytest.raises(TrainingError, match=r"epoch 0, step \d+"):
        train(_cfg("train.lr=1e30"), output_dir=tmp_path, data_root=data_root, epochs=1, progress=False)
    assert not (tmp_path / "checkpoint.pth").exists()  # nothing written from non-finite weights


def test_resume_is_exact(data_root: Path, tmp_path: Path) -> None:
    from hhrnet.checkpoint import read_checkpoint
    from hhrnet.train import train

    cfg = _cfg()
    train(cfg, output_dir=tmp_path / "straight", data_root=data_root, epochs=2, progress=False)
    train(cfg, output_dir=tmp_path / "split", data_root=data_root, epochs=1, progress=False)
    resumed = train(cfg, output_dir=tmp_path / "split", data_root=data_root, epochs=2, progress=False)
    assert resumed.epochs_run == 1
    a, meta_a = read_checkpoint(tmp_path / "straight" / "checkpoint.pth")
    b, meta_b = read_checkpoint(tmp_path / "split" / "checkpoint.pth")
    assert meta_a["epoch"] == meta_b["epoch"] == 2
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert meta_a["optimizer"]["state"][0]["step"] == meta_b["optimizer"]["state"][0]["step"]
    assert [h["loss"] for h in meta_a["history"]] == [h["loss"] for h in meta_b["history"]]


def _cli_train(out: Path, root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "hhrnet", "train", "--config", "tiny", *sum((["--set", s] for s in SMALL), []),
            "--out", str(out), "--data-root", str(root), *extra]  # fmt: skip


def test_kill_9_mid_epoch_then_resume(data_root: Path, tmp_path: Path) -> None:
    from hhrnet.checkpoint import read_checkpoint

    out = tmp_path / "run"
    env = {**os.environ, "CI": "true"}
    proc = subprocess.Popen(_cli_train(out, data_root, "--epochs", "50"), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.time() + 120
    ckpt = out / "checkpoint.pth"
    try:
        while time.time() < deadline:
            if ckpt.is_file():
                _, meta = read_checkpoint(ckpt)
                if meta["epoch"] >= 2:
                    break
            time.sleep(0.2)
        time.sleep(0.3)  # inside the next epoch, maybe mid-write
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    for path in out.glob("*.pth"):  # nothing torn: every file loads
        read_checkpoint(path)
    _, meta = read_checkpoint(ckpt)
    done = meta["epoch"]
    result = subprocess.run(_cli_train(out, data_root, "--epochs", str(done + 1)), env=env, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"resumed from {ckpt} at epoch {done}" in result.stdout
    assert read_checkpoint(ckpt)[1]["epoch"] == done + 1


def test_ddp_two_processes_cpu(data_root: Path, tmp_path: Path) -> None:
    worker = Path(__file__).with_name("ddp_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker),
           str(data_root), str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "CI": "true"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k in r0["params"]:
        assert torch.equal(r0["params"][k], r1["params"][k]), k
    assert r0["after"] < 0.97 * r0["before"], (r0["before"], r0["after"])
    assert (tmp_path / "checkpoint.pth").is_file()
