"""Loss: the batched AE / heatmap loss against a per-image, per-person loop twin of the official formula."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from hhrnet.config import LossConfig
from hhrnet.losses import HigherHRNetLoss, ae_loss, grouping_counts, heatmap_loss
from hhrnet.targets import pack_joints


def loop_ae_loss(
    tags: torch.Tensor, joints: np.ndarray, loss_type: str, margin: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Official AELoss written as loops: tags (B, N) flattened, or (B, D, N) for D-vector tags (not official:
    squared deviations and distances become Euclidean), joints (B, P, J, 2) numpy; ``margin`` (not official)
    is where the max push stops."""
    if tags.ndim == 2:
        tags = tags[:, None]
    pushes, pulls = [], []
    for b in range(tags.shape[0]):
        means, pull = [], tags.new_zeros(())
        for person in joints[b]:
            picked = [tags[b, :, int(idx)] for idx, used in person if used > 0]
            if not picked:
                continue
            stack = torch.stack(picked)  # (k, D)
            mean = stack.mean(dim=0)
            means.append(mean)
            pull = pull + ((stack - mean) ** 2).sum(dim=1).mean()
        n = len(means)
        if n == 0:
            pushes.append(tags.new_zeros(()))
            pulls.append(tags.new_zeros(()))
            continue
        if n == 1:
            pushes.append(tags.new_zeros(()))
            pulls.append(pull / n)
            continue
        total = tags.new_zeros(())
        for a in range(n):
            for c in range(n):
                sq = ((means[a] - means[c]) ** 2).sum()
                if loss_type == "exp":
                    total = total + torch.exp(-sq)
                elif a != c:  # the diagonal's distance is 0: its term is the margin, added below
                    total = total + torch.clamp(margin - sq.sqrt(), min=0)
        self_push = n if loss_type == "exp" else 0  # exp: the diagonal is in the sum, 1 each
        pushes.append((total - self_push) / ((n - 1) * n) * 0.5)
        pulls.append(pull / n)
    return torch.stack(pushes), torch.stack(pulls)


def _batch(seed: int, people: tuple[int, ...], size: int = 8, joints: int = 5, maxp: int = 6):
    """Random tag maps (B, J, H, W) and packed joints from random people (people[b] per image)."""
    rng = np.random.default_rng(seed)
    tags = torch.tensor(rng.normal(0, 1.5, size=(len(people), joints, size, size)), dtype=torch.float32)
    packed = []
    for n in people:
        pts = np.zeros((n, joints, 3))
        pts[..., :2] = rng.uniform(-1, size + 1, size=(n, joints, 2))
        pts[..., 2] = rng.integers(0, 3, size=(n, joints))
        if n >= 2:
            pts[0, :, 2] = 0  # an empty person in the layout
        packed.append(pack_joints(pts, size, maxp))
    return tags, torch.from_numpy(np.stack(packed))


@pytest.mark.parametrize(("loss_type", "margin"), [("exp", 1.0), ("max", 1.0), ("max", 2.0)])
@pytest.mark.parametrize("people", [(0,), (1,), (2,), (4, 0, 1, 6), (6, 3)])
def test_ae_loss_equals_loop_twin(loss_type: str, margin: float, people: tuple[int, ...]) -> None:
    tags, joints = _batch(sum(people) + len(people), people)
    a = tags.clone().requires_grad_(True)
    b = tags.clone().requires_grad_(True)
    push, pull = ae_loss(a, joints, loss_type, margin)  # type: ignore[arg-type]
    ref_push, ref_pull = loop_ae_loss(b.reshape(len(people), -1), joints.numpy(), loss_type, margin)
    assert push.shape == pull.shape == (len(people),)
    torch.testing.assert_close(push, ref_push, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(pull, ref_pull, rtol=1e-6, atol=1e-6)
    (push.sum() + pull.sum()).backward()
    (ref_push.sum() + ref_pull.sum() + 0 * b.sum()).backward()  # 0*: the twin's N=0 terms are constants
    assert a.grad is not None and b.grad is not None
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)
    if max(people) >= 3:  # people with joints give a real, non-trivial loss
        assert float(pull.detach().max()) > 0 and float(push.detach().max()) > 0
    if people == (1,):  # one person: push is exactly 0, pull is its own spread
        assert float(push[0].detach()) == 0.0 and float(pull[0].detach()) > 0


@pytest.mark.parametrize(("loss_type", "margin"), [("exp", 1.0), ("max", 1.0), ("max", 4.0)])
@pytest.mark.parametrize("tag_dim", [2, 3])
@pytest.mark.parametrize("people", [(0,), (1,), (2,), (4, 0, 1, 6)])
def test_vector_tag_ae_loss_equals_loop_twin(
    loss_type: str, margin: float, tag_dim: int, people: tuple[int, ...]
) -> None:
    """D-vector tags: the channels are D groups of J, each group indexed like the one-value tag map."""
    groups = [_batch(sum(people) + d, people)[0] for d in range(tag_dim)]
    _, joints = _batch(sum(people), people)
    tags = torch.cat(groups, 1)  # (B, D * J, H, W)
    a = tags.clone().requires_grad_(True)
    b = tags.clone().requires_grad_(True)
    push, pull = ae_loss(a, joints, loss_type, margin, tag_dim)  # type: ignore[arg-type]
    ref_push, ref_pull = loop_ae_loss(b.reshape(len(people), tag_dim, -1), joints.numpy(), loss_type, margin)
    torch.testing.assert_close(push, ref_push, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pull, ref_pull, rtol=1e-5, atol=1e-6)
    (push.sum() + pull.sum()).backward()
    (ref_push.sum() + ref_pull.sum() + 0 * b.sum()).backward()
    assert a.grad is not None and b.grad is not None
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)
    if max(people) >= 3:
        assert float(pull.detach().max()) > 0 and float(push.detach().max()) > 0


def test_vector_tags_are_compared_by_euclidean_distance() -> None:
    """Two people at (0, 0) and (3, 4): distance 5, so a margin-6 push is 1 per ordered pair; identical
    vectors (collapsed tags) push at full margin with a finite gradient."""
    tags = torch.zeros(1, 2, 2, 2)  # J = 1, D = 2: channel 0 is the first value, channel 1 the second
    tags[0, 0, 1, 1], tags[0, 1, 1, 1] = 3.0, 4.0  # flat index 3 holds (3, 4)
    joints = torch.zeros(1, 2, 1, 2, dtype=torch.int64)
    joints[0, 0, 0], joints[0, 1, 0] = torch.tensor([0, 1]), torch.tensor([3, 1])
    push, pull = ae_loss(tags, joints, "max", 6.0, tag_dim=2)
    torch.testing.assert_close(push, torch.tensor([0.5]))  # 2 pairs x 1 / (2 x 1) x 0.5
    torch.testing.assert_close(pull, torch.tensor([0.0]))
    push, _ = ae_loss(tags, joints, "exp", tag_dim=2)
    torch.testing.assert_close(push, torch.tensor([float(np.exp(-25.0)) * 0.5]))
    collapsed = torch.zeros(1, 2, 2, 2, requires_grad=True)
    push, _ = ae_loss(collapsed, joints, "max", 4.0, tag_dim=2)
    push.sum().backward()
    torch.testing.assert_close(push.detach(), torch.tensor([2.0]))
    assert collapsed.grad is not None and bool(torch.isfinite(collapsed.grad).all())
    # one value per tag is the official loss: a D = 2 tag whose second value is 0 everywhere loses the same
    one = torch.randn(2, 5, 8, 8)
    _, jts = _batch(5, (4, 3))
    for kind, m in (("exp", 1.0), ("max", 4.0)):
        ref = ae_loss(one, jts, kind, m)  # type: ignore[arg-type]
        two = ae_loss(torch.cat([one, torch.zeros_like(one)], 1), jts, kind, m, tag_dim=2)  # type: ignore[arg-type]
        torch.testing.assert_close(two, ref, rtol=1e-6, atol=1e-6)


def test_ae_loss_known_values() -> None:
    """Two people with constant tags 0 and 1: pull 0, push exp(-1) (exp) or 0 (max); one person 1 off."""
    tags = torch.zeros(1, 1, 2, 2)
    tags[0, 0, 1] = 1.0  # flat indices 2, 3 hold tag 1
    joints = torch.zeros(1, 3, 1, 2, dtype=torch.int64)
    joints[0, 0, 0] = torch.tensor([0, 1])
    joints[0, 1, 0] = torch.tensor([3, 1])
    push, pull = ae_loss(tags, joints, "exp")
    torch.testing.assert_close(push, torch.tensor([np.exp(-1.0) * 0.5], dtype=torch.float32))
    torch.testing.assert_close(pull, torch.tensor([0.0]))
    push, _ = ae_loss(tags, joints, "max")
    torch.testing.assert_close(push, torch.tensor([0.0]))
    # margin 2: tags 1 apart still push, max(0, 2 - 1) = 1 for each of the 2 ordered pairs: 2 / (2 * 1) * 0.5
    push, _ = ae_loss(tags, joints, "max", margin=2.0)
    torch.testing.assert_close(push, torch.tensor([0.5]))
    with pytest.raises(ValueError, match="max"):
        ae_loss(tags, joints, "exp", margin=2.0)
    # pull of one person with tags 0 and 1: mean 0.5, mean squared deviation 0.25
    joints2 = torch.zeros(1, 2, 2, 2, dtype=torch.int64)
    joints2[0, 0] = torch.tensor([[0, 1], [2, 1]])
    push, pull = ae_loss(tags, joints2, "exp")
    torch.testing.assert_close(pull, torch.tensor([0.25]))
    torch.testing.assert_close(push, torch.tensor([0.0]))


def loop_grouping(tags: torch.Tensor, joints: np.ndarray, threshold: float) -> tuple[int, int]:
    """Grouping at ground-truth joints, written as loops: tags (B, N) flattened or (B, D, N) for D-vector
    tags (Euclidean distances), joints (B, P, J, 2)."""
    flat = tags.numpy().astype(np.float64)
    if flat.ndim == 2:
        flat = flat[:, None]
    correct = people = 0
    for b in range(flat.shape[0]):
        persons = [[flat[b, :, int(i)] for i, used in person if used > 0] for person in joints[b]]
        means = {p: np.mean(v, axis=0) for p, v in enumerate(persons) if v}
        for p, values in enumerate(persons):
            if not values:
                continue
            people += 1
            ok = True
            for v in values:
                own = np.linalg.norm(v - means[p])
                others = [np.linalg.norm(v - m) for q, m in means.items() if q != p]
                ok &= own < threshold and all(own < o for o in others)
            correct += int(ok)
    return correct, people


@pytest.mark.parametrize("people", [(0,), (1,), (2,), (4, 0, 1, 6), (6, 3)])
@pytest.mark.parametrize("spread", [0.05, 0.6, 3.0])
def test_grouping_counts_equal_loop_twin(people: tuple[int, ...], spread: float) -> None:
    tags, joints = _batch(sum(people) * 7 + len(people), people)
    # people's tags: a per-person centre plus noise of the given spread (small: well grouped, large: not)
    rng = np.random.default_rng(len(people))
    flat = tags.reshape(len(people), -1).clone()
    for b in range(len(people)):
        for p, person in enumerate(joints[b].numpy()):
            for idx, used in person:
                if used > 0:
                    flat[b, int(idx)] = 2.0 * p + float(rng.normal(0, spread))
    correct, total = grouping_counts(flat.reshape(tags.shape), joints)
    assert (int(correct), int(total)) == loop_grouping(flat, joints.numpy(), 1.0)


@pytest.mark.parametrize("spread", [0.05, 0.6, 3.0])
def test_vector_tag_grouping_counts_equal_loop_twin(spread: float) -> None:
    people = (4, 0, 1, 6)
    rng = np.random.default_rng(11)
    tags0, joints = _batch(3, people)
    flat = torch.cat([tags0, _batch(4, people)[0]], 1).reshape(len(people), 2, -1).clone()  # (B, 2, N)
    for b in range(len(people)):
        for person in joints[b].numpy():
            centre = rng.normal(0, 2.0, size=2)  # people's tags: a per-person point in the plane plus noise
            for idx, used in person:
                if used > 0:
                    flat[b, :, int(idx)] = torch.tensor(centre + rng.normal(0, spread, size=2), dtype=torch.float32)
    correct, total = grouping_counts(flat.reshape(len(people), -1, 8, 8), joints, tag_dim=2)
    assert (int(correct), int(total)) == loop_grouping(flat, joints.numpy(), 1.0)


def test_grouping_counts_known_values() -> None:
    tags = torch.zeros(1, 1, 1, 8)
    joints = torch.zeros(1, 3, 1, 2, dtype=torch.int64)
    joints[0, 0, 0], joints[0, 1, 0] = torch.tensor([0, 1]), torch.tensor([1, 1])
    # two people at one tag value (collapsed tags): neither is grouped
    assert [int(v) for v in grouping_counts(tags, joints)] == [0, 2]
    tags[0, 0, 0, 1] = 5.0  # apart: both grouped
    assert [int(v) for v in grouping_counts(tags, joints)] == [2, 2]
    # person 0 with joints at tags 0 and 0.8 (mean 0.4), person 1 at 0.9: joint 0.8 is nearer person 1
    two = torch.zeros(1, 2, 2, 2, dtype=torch.int64)
    two[0, 0] = torch.tensor([[2, 1], [3, 1]])
    two[0, 1, 0] = torch.tensor([4, 1])
    tags[0, 0, 0, 2:5] = torch.tensor([0.0, 0.8, 0.9])
    assert [int(v) for v in grouping_counts(tags, two)] == [1, 2]
    # one person whose joints are 2.4 apart: each is 1.2 from the mean, beyond the threshold 1.0
    tags[0, 0, 0, 2:4] = torch.tensor([0.0, 2.4])
    assert [int(v) for v in grouping_counts(tags, two[:, :1])] == [0, 1]
    assert [int(v) for v in grouping_counts(tags, two[:, :1], threshold=1.5)] == [1, 1]


def test_criterion_grouping_reads_the_tag_channels() -> None:
    cfg = LossConfig()
    crit = HigherHRNetLoss(cfg, 2)
    out0 = torch.zeros(1, 4, 2, 2)  # 2 heatmap channels, then 2 tag channels
    out0[0, 0] = 9.0  # a heatmap channel with a large value that must not be read as a tag
    out0[0, 2, 0, 1] = 3.0  # tag of joint 0 at (0, 1): flat index 1 of the (2, 2, 2) tag map
    joints = torch.zeros(1, 2, 2, 2, dtype=torch.int64)
    joints[0, 0, 0], joints[0, 1, 0] = torch.tensor([0, 1]), torch.tensor([1, 1])
    counts = crit.grouping_counts([out0, torch.zeros(1, 2, 4, 4)], [joints, joints])
    assert counts is not None and [int(v) for v in counts] == [2, 2]
    off = HigherHRNetLoss(replace(cfg, with_ae_loss=(False, False)), 2)
    assert off.grouping_counts([out0, torch.zeros(1, 2, 4, 4)], [joints, joints]) is None


def test_heatmap_loss_is_mean_over_all_positions() -> None:
    pred = torch.zeros(2, 3, 4, 4)
    gt = torch.ones(2, 3, 4, 4)
    mask = torch.ones(2, 4, 4)
    mask[1, :2] = 0  # half of image 1 ignored: the loss halves, it is not renormalised by mask area
    torch.testing.assert_close(heatmap_loss(pred, gt, mask), torch.tensor([1.0, 0.5]))


def _official_total(loss: HigherHRNetLoss, outputs, heatmaps, masks, joints) -> torch.Tensor:
    """The official trainer's sum written out per stage, on the loop twin."""
    total = torch.zeros(())
    j = loss.num_joints
    for i, out in enumerate(outputs):
        if not loss.with_heatmaps_loss[i]:
            continue
        per = ((out[:, :j] - heatmaps[i]) ** 2 * masks[i][:, None]).mean(dim=3).mean(dim=2).mean(dim=1)
        total = total + (per * loss.heatmaps_loss_factor[i]).mean()
        if loss.with_ae_loss[i]:
            push, pull = loop_ae_loss(out[:, j:].reshape(out.shape[0], -1), joints[i].numpy(), loss.ae_loss_type)
            total = total + (push * loss.push_loss_factor[i]).mean() + (pull * loss.pull_loss_factor[i]).mean()
    return total


@pytest.mark.parametrize(
    "cfg",
    [
        LossConfig(),
        LossConfig(
            ae_loss_type="max",
            push_loss_factor=(0.5, 0.1),
            pull_loss_factor=(0.25, 0.1),
            heatmaps_loss_factor=(2.0, 0.5),
        ),
        LossConfig(with_ae_loss=(True, True)),
        LossConfig(with_heatmaps_loss=(True, False)),
    ],
)
def test_multi_stage_total_equals_official_sum(cfg: LossConfig) -> None:
    rng = np.random.default_rng(0)
    j, batch = 5, 3
    tags0, joints0 = _batch(1, (3, 0, 5), size=8, joints=j)
    tags1, joints1 = _batch(2, (3, 0, 5), size=16, joints=j)
    hm0 = torch.tensor(rng.random((batch, j, 8, 8)), dtype=torch.float32)
    hm1 = torch.tensor(rng.random((batch, j, 16, 16)), dtype=torch.float32)
    out0 = torch.cat([torch.tensor(rng.random((batch, j, 8, 8)), dtype=torch.float32), tags0], 1)
    extra = [tags1] if cfg.with_ae_loss[1] else []
    out1 = torch.cat([torch.tensor(rng.random((batch, j, 16, 16)), dtype=torch.float32), *extra], 1)
    masks = [
        torch.tensor(rng.random((batch, 8, 8)) > 0.3).float(),
        torch.tensor(rng.random((batch, 16, 16)) > 0.3).float(),
    ]
    loss = HigherHRNetLoss(cfg, j)
    total, terms = loss([out0, out1], [hm0, hm1], masks, [joints0, joints1])
    expected = _official_total(loss, [out0, out1], [hm0, hm1], masks, [joints0, joints1])
    torch.testing.assert_close(total, expected, rtol=1e-6, atol=1e-7)
    assert total.dtype == torch.float32 and total.ndim == 0
    assert ("push_1" in terms) == (cfg.with_ae_loss[1] and cfg.with_heatmaps_loss[1])
    assert ("heatmap_1" in terms) == cfg.with_heatmaps_loss[1]
    parts = sum(v for k, v in terms.items() if k != "total")
    torch.testing.assert_close(parts, total)
    assert float(terms["push_0"]) > 0 and float(terms["pull_0"]) > 0


def test_runs_on_meta_tensors_so_nothing_depends_on_values() -> None:
    """No .item()/.cpu()/nonzero: the whole loss traces on the meta device, which has no data."""
    loss = HigherHRNetLoss(LossConfig(), 17)
    meta = {"device": "meta"}
    outputs = [torch.empty(2, 34, 8, 8, **meta), torch.empty(2, 17, 16, 16, **meta)]
    heatmaps = [torch.empty(2, 17, 8, 8, **meta), torch.empty(2, 17, 16, 16, **meta)]
    masks = [torch.empty(2, 8, 8, **meta), torch.empty(2, 16, 16, **meta)]
    joints = [torch.empty(2, 30, 17, 2, dtype=torch.int64, **meta)] * 2
    total, terms = loss(outputs, heatmaps, masks, joints)
    assert total.device.type == "meta" and total.shape == ()
    assert set(terms) == {"heatmap_0", "push_0", "pull_0", "heatmap_1", "total"}


def test_autocast_computes_in_float32() -> None:
    tags, joints = _batch(3, (4, 2), size=8, joints=17, maxp=30)
    cfg = LossConfig()
    loss = HigherHRNetLoss(cfg, 17)
    out0 = torch.cat([torch.rand(2, 17, 8, 8), tags], 1)
    out1 = torch.rand(2, 17, 16, 16)
    hm = [torch.rand(2, 17, 8, 8), torch.rand(2, 17, 16, 16)]
    masks = [torch.ones(2, 8, 8), torch.ones(2, 16, 16)]
    ref, _ = loss([out0, out1], hm, masks, [joints, joints])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = [out0.to(torch.bfloat16), out1.to(torch.bfloat16)]
        total, _ = loss(half, hm, masks, [joints, joints])
    assert total.dtype == torch.float32
    torch.testing.assert_close(total, ref, rtol=2e-2, atol=1e-3)


def test_rejects_wrong_stage_count() -> None:
    loss = HigherHRNetLoss(replace(LossConfig()), 17)
    with pytest.raises(ValueError, match="2 stages"):
        loss(
            [torch.zeros(1, 34, 4, 4)],
            [torch.zeros(1, 17, 4, 4)],
            [torch.ones(1, 4, 4)],
            [torch.zeros(1, 30, 17, 2, dtype=torch.int64)],
        )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_forward_backward_never_synchronises_under_fp16_autocast() -> None:
    """CUDA sync debug mode turns any host synchronisation (item, cpu, nonzero) into an error."""
    tags, joints = _batch(4, (5, 0, 1, 9), size=16, joints=17, maxp=30)
    loss = HigherHRNetLoss(LossConfig(), 17)
    dev = torch.device("cuda")
    out0 = torch.cat([torch.rand(4, 17, 16, 16), tags], 1).to(dev).requires_grad_(True)
    out1 = torch.rand(4, 17, 32, 32, device=dev, requires_grad=True)
    hm = [torch.rand(4, 17, 16, 16, device=dev), torch.rand(4, 17, 32, 32, device=dev)]
    masks = [torch.ones(4, 16, 16, device=dev), torch.ones(4, 32, 32, device=dev)]
    jts = [joints.to(dev), joints.to(dev)]
    ref, _ = loss(
        [out0.detach().cpu(), out1.detach().cpu()],
        [h.cpu() for h in hm],
        [m.cpu() for m in masks],
        [j.cpu() for j in jts],
    )
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast("cuda", dtype=torch.float16):
            total, _ = loss([out0.half(), out1.half()], hm, masks, jts)
            total.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert total.dtype == torch.float32
    torch.testing.assert_close(total.cpu(), ref, rtol=1e-2, atol=1e-3)
