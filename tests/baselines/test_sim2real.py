"""Sim2Real: loss masking of non-healthy slices, the loss, training patches, training and the row end to end."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.settings import Sim2RealSettings
from baselines.sim2real import (SyntheticTumourPatches, TumourLogits, build_network, build_optimizer, host_voxels,
                                loss_weight, network_inputs, sim2real_loss, train_sim2real, training_key)
from clisc.data.preprocessing import Volume
from clisc.errors import DataError
from clisc.pipeline.run import run_method
from clisc.stages.unet3d import UNetSettings

UNET = UNetSettings(channels=(4, 8, 16), patch_size=(16, 16, 16), batch_size=2)


def _volume(case_id: str = "a", shape: tuple[int, int, int] = (28, 30, 24)) -> Volume:
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"))
    centre = np.array(shape, float)[:, None, None, None] / 2
    brain = (((grid - centre) / (0.45 * np.array(shape, float)[:, None, None, None])) ** 2).sum(0) <= 1
    image = np.where(brain, np.random.default_rng(0).standard_normal(shape), 0.0).astype(np.float32)
    return Volume(case_id, image, None, (4.0, 4.0, 4.0), np.eye(4), tuple((0, n) for n in shape), shape, brain)


def test_loss_weight_keeps_healthy_slices_and_the_synthetic_tumour() -> None:
    tumour = np.zeros((4, 4, 6), bool)
    tumour[1, 1, 3] = True
    weight = loss_weight(tumour.shape, tumour, np.array([0, 1]))
    assert weight[:, :, :2].min() == 1 and weight[1, 1, 3] == 1
    assert weight[:, :, 2:].sum() == 1  # unhealthy slices count only inside the synthetic tumour
    assert loss_weight(tumour.shape, tumour, None).min() == 1
    strict = loss_weight(tumour.shape, tumour, np.array([0, 1]), keep_tumour=False)
    assert strict[:, :, :2].min() == 1 and strict[:, :, 2:].sum() == 0


def test_host_voxels_leave_out_the_real_tumour_and_its_margin_only() -> None:
    label = np.zeros((20, 20, 20), np.uint8)
    label[8:12, 8:12, 8:12] = 2
    host = host_voxels(label, (2.0, 2.0, 2.0), margin_mm=4.0)
    assert not host[label > 0].any() and not host[6, 10, 10] and host[5, 10, 10]  # 4 mm = 2 voxels out, 6 mm in
    assert not host[10, 10, 6] and host[10, 10, 5] and host[0].all()  # the tumour's own slices count beside it
    assert host_voxels(label, (2.0, 2.0, 2.0), margin_mm=0.0).sum() == label.size - 64
    assert host_voxels(np.zeros_like(label), (1.0, 1.0, 1.0), 5.0).all()
    tumour = np.zeros(label.shape, bool)
    tumour[9:11, 2:12, 9:11] = True  # a synthetic tumour reaching into the real one
    weight = loss_weight(label.shape, tumour, host)
    assert weight.dtype == np.float32 and np.array_equal(weight == 1, host)  # counted only outside the margin
    with pytest.raises(ValueError, match="does not match the volume"):
        loss_weight((20, 20, 19), tumour[..., :19], host)
    with pytest.raises(ValueError, match="host_margin_mm"):
        Sim2RealSettings(host_margin_mm=-1.0)


def test_masked_voxels_do_not_change_the_loss_or_its_gradient() -> None:
    """Whatever the network says on voxels of weight 0 (a real tumour on a non-healthy slice), the
    loss and its gradient are the same."""
    torch.manual_seed(0)
    label = torch.zeros(1, 4, 4, 4, dtype=torch.int64)
    label[0, 1:3, 1:3, 1:3] = 1
    weight = torch.ones(1, 4, 4, 4)
    weight[0, :, :, 3] = 0
    layers = torch.randn(1, 2, 4, 4, 4)
    output = torch.randn(1, 4, 4, 4, 4)
    changed = output.clone()
    changed[:, :, :, :, 3] += 5 * torch.randn(1, 4, 4, 4)
    grads = []
    for out in (output, changed):
        out = out.clone().requires_grad_(True)
        loss, parts = sim2real_loss(out, label, weight, layers)
        loss.backward()
        grads.append((float(loss.detach()), out.grad[:, :, :, :, :3].clone()))
    assert grads[0][0] == pytest.approx(grads[1][0]) and torch.allclose(grads[0][1], grads[1][1])
    assert set(parts) == {"ce", "dice_loss", "l1_layers"}


def test_loss_is_low_for_the_right_answer_and_high_for_the_wrong_one() -> None:
    label = torch.zeros(1, 4, 4, 4, dtype=torch.int64)
    label[0, :2] = 1
    weight = torch.ones(1, 4, 4, 4)
    right = torch.stack([(1 - label) * 10.0, label * 10.0], dim=1).float()
    low, parts = sim2real_loss(right, label, weight, None)
    high, _ = sim2real_loss(right.flip(1), label, weight, None)
    assert float(low) < 0.01 < 1.5 < float(high) and "l1_layers" not in parts


def test_patches_are_deterministic_and_carry_the_synthetic_tumour() -> None:
    settings = Sim2RealSettings(epochs=2, iterations_per_epoch=2, tumour_crop=1.0)
    volumes = [_volume("a"), _volume("b")]
    dataset = SyntheticTumourPatches(volumes, [None, np.array([0, 1])], settings, UNET, seed=3, steps=2)
    assert len(dataset) == 2 * 2 * 2
    first, again = dataset[5], dataset[5]
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    image, label, weight, layers = first
    assert image.shape == (1, 16, 16, 16) and label.shape == weight.shape == (16, 16, 16)
    assert layers.shape == (2, 16, 16, 16) and label.sum() > 0  # centred on the tumour
    assert torch.all(layers[1][label == 0] == 0)  # the tumour layer is empty outside the tumour
    assert not torch.equal(dataset[4][0], first[0])
    with pytest.raises(ValueError, match="one healthy-slice entry per volume"):
        SyntheticTumourPatches(volumes, [None], settings, UNET, seed=3, steps=2)


def test_intensity_augmentation_changes_only_the_input_and_is_seeded() -> None:
    """``augment=intensity``: the same patch, label, loss weight and (clean) layer targets as ``flips``; the
    input differs on the items whose draws fire, identically on every call."""
    volumes = [_volume("a"), _volume("b")]
    plain, augmented = (SyntheticTumourPatches(volumes, [None, None], Sim2RealSettings(epochs=2, augment=augment,
                                                                                     iterations_per_epoch=4),
                                               UNET, seed=3, steps=4) for augment in ("flips", "intensity"))
    changed = 0
    for k in range(len(plain)):
        a, b = plain[k], augmented[k]
        for x, y in zip(a[1:], b[1:]):
            assert torch.equal(x, y)
        assert b[0].shape == a[0].shape and b[0].dtype == torch.float32 and torch.isfinite(b[0]).all()
        assert all(torch.equal(x, y) for x, y in zip(b, augmented[k]))
        changed += not torch.equal(a[0], b[0])
    assert 0 < changed < len(plain)  # each transform fires with its probability (about 2 items in 3)
    with pytest.raises(ValueError, match="sim2real.augment"):
        Sim2RealSettings(augment="nnunet")


@pytest.mark.parametrize("decomposition,channels", [(True, 4), (False, 2)])
def test_network_outputs_classes_and_layers(decomposition: bool, channels: int) -> None:
    network = build_network(Sim2RealSettings(layer_decomposition=decomposition), UNET)
    x = torch.zeros(1, 1, 16, 16, 16)
    assert network(x).shape[1] == channels and TumourLogits(network)(x).shape[1] == 2


@pytest.mark.parametrize("name,kind", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam)])
def test_optimizer_is_the_named_one_at_the_unet_rate(name: str, kind: type) -> None:
    optimizer = build_optimizer(torch.nn.Linear(2, 2), Sim2RealSettings(optimizer=name), UNET)
    assert type(optimizer) is kind and optimizer.param_groups[0]["lr"] == UNET.lr
    with pytest.raises(ValueError, match="sim2real.optimizer"):
        Sim2RealSettings(optimizer="lbfgs")


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_resumes_from_its_checkpoint_to_the_same_weights(tmp_path: Path, optimizer: str) -> None:
    settings = Sim2RealSettings(epochs=2, iterations_per_epoch=1, optimizer=optimizer)
    volumes, healthy = [_volume("a")], [None]
    straight = train_sim2real(volumes, healthy, settings, UNET, seed=0, progress=False)
    first = Sim2RealSettings(epochs=1, iterations_per_epoch=1, optimizer=optimizer)
    rows: list[tuple[int, dict]] = []
    # the checkpoint of a 1-epoch run is not resumed by a 2-epoch run of another id ...
    train_sim2real(volumes, healthy, first, UNET, seed=0, progress=False, checkpoint_dir=tmp_path, run_id="short")
    with pytest.raises(DataError, match="another Sim2Real training run"):
        train_sim2real(volumes, healthy, settings, UNET, seed=0, progress=False, checkpoint_dir=tmp_path, run_id="x")
    # ... and a run stopped after epoch 1 and resumed ends where the straight run ends
    resumed_dir = tmp_path / "resumed"
    train_sim2real(volumes, healthy, first, UNET, seed=0, progress=False, checkpoint_dir=resumed_dir, run_id="r")
    resumed = train_sim2real(volumes, healthy, settings, UNET, seed=0, progress=False, checkpoint_dir=resumed_dir,
                             run_id="r", on_epoch=lambda e, m: rows.append((e, m)))
    assert [e for e, _ in rows] == [2] and {"loss", "ce", "dice_loss", "l1_layers"} <= set(rows[0][1])
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)


def test_runs_end_to_end_label_free_and_with_ground_truth_hosts(synthetic_dataset: Path, tmp_path: Path) -> None:
    result = run_method("sim2real", synthetic_dataset, profile="tiny", cache_root=tmp_path / "cache",
                        progress=False, echo=lambda _: None)
    assert len(result.per_case) == 2 and result.per_case["dsc"].between(0, 100).all()
    assert result.tags["label_free"] == "true" and result.tags["gt_switches"] == "none"
    assert result.params["baselines.sim2real.host_slices"] == "healthy"
    assert len(result.histories["sim2real_network"]) == 1
    gt = run_method("sim2real", synthetic_dataset, profile="tiny", cache_root=tmp_path / "cache", progress=False,
                    echo=lambda _: None, overrides={"baselines.healthy_source": "ground_truth"})
    assert gt.tags["label_free"] == "false" and gt.tags["gt_switches"] == "baselines.healthy_source=ground_truth"
    voxels = run_method("sim2real", synthetic_dataset, profile="tiny", cache_root=tmp_path / "cache", progress=False,
                        echo=lambda _: None, overrides={"baselines.sim2real.host_slices": "ground_truth"})
    assert voxels.tags["gt_switches"] == "baselines.sim2real.host_slices=ground_truth"
    assert voxels.params["baselines.sim2real.host_margin_mm"] == 5.0


def test_network_key_reads_the_margin_and_augmentation_only_when_set(synthetic_dataset: Path, tmp_path: Path) -> None:
    from clisc.pipeline.context import RunContext
    from clisc.pipeline.settings import resolve_settings
    keys = {}
    for name, overrides in {"slices": {}, "slices_margin": {"baselines.sim2real.host_margin_mm": 9.0},
                            "voxels": {"baselines.sim2real.host_slices": "ground_truth"},
                            "voxels_margin": {"baselines.sim2real.host_slices": "ground_truth",
                                              "baselines.sim2real.host_margin_mm": 9.0},
                            "flips": {"baselines.sim2real.augment": "flips"},
                            "intensity": {"baselines.sim2real.augment": "intensity"},
                            "inference": {"baselines.sim2real.threshold": 0.8, "baselines.sim2real.test_time": "flips"}
                            }.items():
        ctx = RunContext(synthetic_dataset, resolve_settings(profile="tiny", overrides=overrides), 0, tmp_path,
                         "cpu", progress=False, echo=lambda _: None)
        settings, inputs, _ = network_inputs(ctx)
        keys[name] = ctx.key("sim2real_network", settings, inputs)
    assert keys["slices"] == keys["slices_margin"] and len({keys["slices"], keys["voxels"], keys["voxels_margin"]}) == 3
    assert keys["flips"] == keys["slices"] != keys["intensity"]  # the code's flips keep the keys made before augment
    assert keys["inference"] == keys["slices"]  # how the network is applied does not retrain it


@pytest.mark.parametrize("unread", [{"augment": "intensity"}, {"foreground_fraction": 0.5}, {"loss": "dice_ce"},
                                    {"deep_supervision": 2}])
def test_network_key_ignores_the_supervised_recipe_it_does_not_train_with(unread: dict) -> None:
    """Sim2Real crops, augments and weighs its loss itself: the supervised U-Net's recipe ingredients do
    not retrain it; what it does read (the rate, the patch) does."""
    assert training_key(UNetSettings(**unread)) == training_key(UNetSettings())
    assert training_key(UNetSettings(lr=0.02)) != training_key(UNetSettings())
    assert training_key(UNetSettings(patch_size=(64, 64, 64))) != training_key(UNetSettings())


def test_threshold_and_mirroring_are_sim2real_s_own(synthetic_dataset: Path, tmp_path: Path) -> None:
    """``baselines.sim2real.threshold`` / ``test_time`` make the row's masks (keyed only when set); CLISC's
    ``unet.test_time`` does not reach Sim2Real."""
    from baselines.sim2real import segment, sim2real_unet
    from clisc.pipeline.context import RunContext
    from clisc.pipeline.settings import resolve_settings

    def run(overrides: dict) -> tuple[RunContext, str, dict]:
        ctx = RunContext(synthetic_dataset, resolve_settings(profile="tiny", overrides=overrides), 0,
                         tmp_path / "cache", "cpu", progress=False, echo=lambda _: None)
        return ctx, *segment(ctx, "test")

    ctx, plain_key, plain = run({})
    _, default_key, _ = run({"baselines.sim2real.threshold": 0.5, "unet.test_time": "flips"})
    assert default_key == plain_key and sim2real_unet(ctx).test_time == "none"
    _, strict_key, strict = run({"baselines.sim2real.threshold": 0.9})
    assert strict_key != plain_key and all(strict[c].sum() <= plain[c].sum() for c in plain)
    mirrored_ctx, mirrored_key, _ = run({"baselines.sim2real.test_time": "flips"})
    assert mirrored_key not in (plain_key, strict_key) and sim2real_unet(mirrored_ctx).test_time == "flips"
    for bad in ({"threshold": 1.0}, {"threshold": 0.0}, {"test_time": "rot90"}):
        with pytest.raises(ValueError, match="sim2real"):
            Sim2RealSettings(**bad)


def test_patch_size_is_sim2real_s_own_and_keyed_as_the_unet_s(synthetic_dataset: Path, tmp_path: Path) -> None:
    """``baselines.sim2real.patch_size`` sets the patch and window of Sim2Real's network only (CLISC's U-Net
    keeps ``unet.patch_size``); the network is keyed by the patch it trains on, whichever setting gave it."""
    from baselines.sim2real import sim2real_unet
    from clisc.pipeline.context import RunContext
    from clisc.pipeline.settings import resolve_settings

    def ctx(overrides: dict) -> RunContext:
        return RunContext(synthetic_dataset, resolve_settings(profile="tiny", overrides=overrides), 0, tmp_path,
                          "cpu", progress=False, echo=lambda _: None)

    def key(c: RunContext) -> str:
        settings, inputs, _ = network_inputs(c)
        return c.key("sim2real_network", settings, inputs)

    plain, own = ctx({}), ctx({"baselines.sim2real.patch_size": [32, 32, 24]})
    shared = ctx({"unet.patch_size": [32, 32, 24]})
    assert sim2real_unet(own).patch_size == (32, 32, 24)
    assert own.settings.unet.patch_size == plain.settings.unet.patch_size
    assert sim2real_unet(plain).patch_size == plain.settings.unet.patch_size
    assert key(own) == key(shared) != key(plain)
    patches = SyntheticTumourPatches([_volume()], [None], Sim2RealSettings(epochs=1), sim2real_unet(own), 0, steps=1)
    assert patches[0][0].shape == (1, 32, 32, 24)
    for bad in ((32, 32), (32, 0, 32)):
        with pytest.raises(ValueError, match="sim2real.patch_size"):
            Sim2RealSettings(patch_size=bad)


def test_only_the_cpu_profile_trains_on_ground_truth_hosts() -> None:
    from clisc.pipeline.settings import resolve_settings
    cpu = resolve_settings(profile="cpu").baselines.sim2real
    assert (cpu.host_slices, cpu.threshold, cpu.test_time) == ("ground_truth", 0.7, "flips")  # docs/REAL_DATA.md
    for protocol in ("paper", "official"):
        paper = resolve_settings(protocol, "paper").baselines.sim2real
        assert (paper.host_slices, paper.threshold, paper.test_time, paper.augment) == ("healthy", 0.5, "none", "flips")
