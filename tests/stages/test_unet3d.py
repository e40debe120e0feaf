"""3D U-Net stage on tiny networks (channels 4, 8, 16) and tiny volumes (about 20^3, patches 16^3)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from clisc.errors import CliscError, DataError
from clisc.stages import unet3d
from clisc.stages.unet3d import CHECKPOINT_NAME, UNetSettings, build_unet, predict_volume, train_unet
from clisc.stages.unet_official import OfficialUNet3D
from clisc.stages.unet_recipe import keep_largest_component, training_transform

TINY = UNetSettings(channels=(4, 8, 16), patch_size=(16, 16, 16), batch_size=2, epochs=2, lr=0.05)


def tiny_data(n: int = 3, shape: tuple[int, int, int] = (20, 18, 22), seed: int = 0):
    """Smooth random images and labels ``image > 0.3`` (so a network can learn them)."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        noise = torch.from_numpy(rng.normal(size=(1, 1, 5, 5, 5)).astype(np.float32))
        images.append(nn.functional.interpolate(noise, size=shape, mode="trilinear")[0, 0].numpy())
    return images, [(image > 0.3).astype(np.uint8) for image in images]


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def assert_same_weights(first: nn.Module, second: nn.Module) -> None:
    a, b = state_of(first), state_of(second)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("network", ["monai", "official"])
def test_build_unet_maps_one_channel_to_two_class_logits(network):
    model = build_unet(dataclasses.replace(TINY, network=network, channels=(4, 8, 16)))
    assert model(torch.zeros(2, 1, 16, 16, 24)).shape == (2, 2, 16, 16, 24)


def test_official_network_matches_the_public_code_layout():
    model = build_unet(UNetSettings(network="official"))
    assert isinstance(model, OfficialUNet3D)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d)]
    assert len(convs) == 2 * 5 + 2 * 4 + 1  # two per block, 5 encoder + 4 decoder blocks, 1x1 head
    assert [c.out_channels for c in convs[:10:2]] == [16, 32, 64, 128, 256]
    assert sum(isinstance(m, nn.InstanceNorm3d) for m in model.modules()) == 18
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.3, 0.3]
    assert convs[-1].kernel_size == (1, 1, 1) and convs[-1].out_channels == 2


@pytest.mark.parametrize("network", ["monai", "official"])
@pytest.mark.parametrize("activation", [None, "relu", "leakyrelu"])
def test_built_network_uses_the_activation_setting(network, activation):
    """``unet.activation`` (default ReLU, as Cicek and the code) reaches every block of both networks."""
    settings = dataclasses.replace(TINY, network=network)
    if activation is not None:
        settings = dataclasses.replace(settings, activation=activation)
    model = build_unet(settings)
    kinds = {type(m) for m in model.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU))}
    calls: list[float] = []  # the smallest output of each activation call in one forward pass
    for module in model.modules():
        if isinstance(module, (nn.ReLU, nn.LeakyReLU)):
            module.register_forward_hook(lambda _m, _i, out: calls.append(float(out.min())))
    with torch.no_grad():
        model(torch.randn(1, 1, 16, 16, 16))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d) and m.kernel_size == (3, 3, 3)]
    assert len(calls) == len(convs)  # one activation after every 3x3x3 convolution
    if activation == "leakyrelu":
        assert kinds == {nn.LeakyReLU}
        assert all(m.negative_slope == 0.01 for m in model.modules() if isinstance(m, nn.LeakyReLU))
        assert min(calls) < 0
    else:
        assert kinds == {nn.ReLU} and min(calls) >= 0


def test_unknown_activation_or_augmentation_is_refused():
    with pytest.raises(ValueError, match="activation"):
        UNetSettings(activation="gelu")
    with pytest.raises(ValueError, match="augmentation"):
        UNetSettings(augmentation="elastic")


def test_official_augmentation_trains_deterministically_with_any_patch():
    """The official recipe turns the whole volume before the crop, so a patch with X != Y is allowed
    (the axial recipe turns the patch and refuses it); training stays seeded."""
    images, labels = tiny_data()
    settings = dataclasses.replace(TINY, augmentation="official", patch_size=(8, 16, 16), epochs=1)
    first = train_unet(images, labels, settings, seed=1, progress=False)
    second = train_unet(images, labels, settings, seed=1, progress=False)
    assert_same_weights(first, second)
    with pytest.raises(ValueError, match="X and Y"):
        train_unet(images, labels, dataclasses.replace(settings, augmentation="axial"), seed=1, progress=False)
    axial = train_unet(images, labels, dataclasses.replace(TINY, epochs=1), seed=1, progress=False)
    official = train_unet(images, labels, dataclasses.replace(TINY, epochs=1, augmentation="official"), seed=1,
                          progress=False)
    assert not torch.equal(next(axial.parameters()), next(official.parameters()))  # other batches


def test_build_unet_rejects_unknown_network():
    with pytest.raises(ValueError, match="network"):
        build_unet(dataclasses.replace(TINY, network="vnet"))


@pytest.mark.parametrize("dtype", [np.uint8, bool])
def test_keep_largest_component_uses_26_connectivity(dtype):
    mask = np.zeros((10, 10, 10), dtype)
    mask[1, 1, 1] = mask[2, 2, 2] = mask[3, 3, 3] = 1  # corner-touching chain of 3: one component
    mask[7:9, 7, 7] = 1  # 2 voxels
    kept = keep_largest_component(mask)
    assert kept.dtype == mask.dtype
    assert np.argwhere(kept).tolist() == [[1, 1, 1], [2, 2, 2], [3, 3, 3]]


def test_keep_largest_component_leaves_empty_empty():
    assert not keep_largest_component(np.zeros((4, 4, 4), np.uint8)).any()


@pytest.mark.parametrize("shape", [(10, 12, 9), (30, 25, 21)])
def test_training_transform_pads_crops_and_keeps_label_aligned(shape):
    images, labels = tiny_data(1, shape)
    transform = training_transform((16, 16, 16))
    transform.set_random_state(seed=3)
    outputs = [transform({"image": images[0][None], "label": labels[0][None]}) for _ in range(6)]
    for out in outputs:
        image, label = np.asarray(out["image"]), np.asarray(out["label"])
        assert image.shape == label.shape == (1, 16, 16, 16)
        np.testing.assert_array_equal(label, (image > 0.3).astype(label.dtype))
    transform.set_random_state(seed=3)
    again = transform({"image": images[0][None], "label": labels[0][None]})
    np.testing.assert_array_equal(np.asarray(again["image"]), np.asarray(outputs[0]["image"]))


@pytest.mark.parametrize("network", ["monai", "official"])
def test_training_is_seeded_and_deterministic(network):
    images, labels = tiny_data()
    settings = dataclasses.replace(TINY, network=network)
    first = train_unet(images, labels, settings, seed=1, progress=False)
    second = train_unet(images, labels, settings, seed=1, progress=False)
    other = train_unet(images, labels, settings, seed=2, progress=False)
    assert_same_weights(first, second)
    assert not torch.equal(next(first.parameters()), next(other.parameters()))


class Interrupt(Exception):
    """Raised from the epoch callback to simulate a killed training."""


@pytest.mark.parametrize("network", ["monai", "official"])
def test_interrupted_training_resumes_to_the_uninterrupted_result(network, tmp_path):
    images, labels = tiny_data()
    settings = dataclasses.replace(TINY, network=network, epochs=3)
    uninterrupted = train_unet(images, labels, settings, seed=5, progress=False)

    def kill_after_first(epoch: int, loss: float) -> None:
        if epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_unet(images, labels, settings, seed=5, progress=False, checkpoint_dir=tmp_path,
                   on_epoch_end=kill_after_first)
    assert (tmp_path / CHECKPOINT_NAME).exists()
    epochs_run: list[int] = []
    resumed = train_unet(images, labels, settings, seed=5, progress=False, checkpoint_dir=tmp_path,
                         on_epoch_end=lambda epoch, loss: epochs_run.append(epoch))
    assert epochs_run == [2, 3]
    assert_same_weights(resumed, uninterrupted)
    finished = train_unet(images, labels, settings, seed=5, progress=False, checkpoint_dir=tmp_path,
                          on_epoch_end=lambda epoch, loss: epochs_run.append(epoch))
    assert epochs_run == [2, 3]  # a finished run is reloaded, not trained again
    assert_same_weights(finished, uninterrupted)


def test_checkpoint_of_another_run_is_refused(tmp_path):
    images, labels = tiny_data()
    train_unet(images, labels, dataclasses.replace(TINY, epochs=1), seed=0, progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(DataError, match="another training run"):
        train_unet(images, labels, dataclasses.replace(TINY, epochs=1), seed=1, progress=False,
                   checkpoint_dir=tmp_path)


def test_training_learns_a_threshold_segmentation():
    images, labels = tiny_data(4)
    settings = dataclasses.replace(TINY, epochs=40, lr=0.05)
    model = train_unet(images, labels, settings, seed=0, progress=False)
    test_images, test_labels = tiny_data(1, seed=9)
    prediction = predict_volume(model, test_images[0], settings)
    assert unet3d.dice(prediction, test_labels[0]) > 0.8


def test_gt_validation_keeps_the_best_epoch(monkeypatch):
    images, labels = tiny_data()
    settings = dataclasses.replace(TINY, epochs=3, select_on_gt_validation=True)
    scripted_dice = iter([0.2, 0.9, 0.5])
    weights_seen: list[dict[str, torch.Tensor]] = []
    real_predict = unet3d.predict_volume

    def recording_predict(model, image, settings, device="cpu"):
        weights_seen.append(state_of(model))
        return real_predict(model, image, settings, device)

    monkeypatch.setattr(unet3d, "predict_volume", recording_predict)
    monkeypatch.setattr(unet3d, "dice", lambda prediction, label: next(scripted_dice))
    model = train_unet(images, labels, settings, seed=0, val=(images[:1], labels[:1]), progress=False)
    assert len(weights_seen) == 3
    for name, value in state_of(model).items():
        torch.testing.assert_close(value, weights_seen[1][name], rtol=0, atol=0)
    last_epoch = dataclasses.replace(settings, select_on_gt_validation=False)
    unselected = train_unet(images, labels, last_epoch, seed=0, val=(images[:1], labels[:1]), progress=False)
    assert not torch.equal(next(unselected.parameters()), next(model.parameters()))


class SignOfImage(nn.Module):
    """Logits ``(0, image)``: class 1 wherever the image is positive; ``Bx1xXxYxZ -> Bx2xXxYxZ``."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(image), image], dim=1)


@pytest.mark.parametrize("inference", ["sliding", "resize"])
@pytest.mark.parametrize("shape", [(10, 12, 9), (19, 23, 17), (40, 36, 33)])
def test_predict_volume_keeps_geometry(inference, shape):
    x = np.arange(shape[0], dtype=np.float32)[:, None, None] - shape[0] / 3 + 0.5
    image = np.broadcast_to(x, shape).copy() + np.linspace(0.01, 0.02, shape[2], dtype=np.float32)
    settings = dataclasses.replace(TINY, inference=inference)
    prediction = predict_volume(SignOfImage(), image, settings)
    assert prediction.shape == shape and prediction.dtype == np.uint8
    if inference == "sliding":
        np.testing.assert_array_equal(prediction, (image > 0).astype(np.uint8))
    else:  # nearest resize to 16^3 and back moves the boundary by at most one coarse voxel
        assert unet3d.dice(prediction, image > 0) > 0.85


@pytest.mark.parametrize("test_time", ["none", "flips"])
def test_predict_volume_thresholds_the_tumour_probability(test_time):
    """``threshold`` t: tumour where softmax > t (SignOfImage: sigmoid(image) > t, i.e. image > logit(t)),
    on logits and on the mirrored softmax alike; 0.5 is the argmax."""
    z = np.linspace(-3.0, 3.0, 20, dtype=np.float32) + 0.01
    image = np.broadcast_to(z, (18, 16, 20)).copy()  # varies along Z only, so X/Y mirroring changes nothing
    settings = dataclasses.replace(TINY, test_time=test_time)
    argmax = predict_volume(SignOfImage(), image, settings)
    np.testing.assert_array_equal(predict_volume(SignOfImage(), image, settings, threshold=0.5), argmax)
    np.testing.assert_array_equal(argmax, (image > 0).astype(np.uint8))
    strict = predict_volume(SignOfImage(), image, settings, threshold=float(1 / (1 + np.exp(-1.0))))
    np.testing.assert_array_equal(strict, (image > 1.0).astype(np.uint8))
    assert 0 < strict.sum() < argmax.sum()


def test_predict_volume_rejects_unknown_inference():
    with pytest.raises(ValueError, match="inference"):
        predict_volume(SignOfImage(), np.ones((16, 16, 16), np.float32),
                       dataclasses.replace(TINY, inference="tta"))


def test_monai_network_first_level_works_at_full_resolution():
    """Cicek's layout: the first (widest-resolution) level keeps the input size; then one halving per level."""
    model = build_unet(dataclasses.replace(TINY, network="monai", channels=(4, 8, 16, 32)))
    sizes = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(tuple(out.shape[1:])))
             for m in (model.input_block, *model.downsamples, model.bottleneck)]
    with torch.no_grad():
        out = model(torch.zeros(1, 1, 16, 16, 16))
    for hook in hooks:
        hook.remove()
    assert sizes == [(4, 16, 16, 16), (8, 8, 8, 8), (16, 4, 4, 4), (32, 2, 2, 2)]
    assert tuple(out.shape) == (1, 2, 16, 16, 16)


def test_on_epoch_record_survives_an_interruption(tmp_path):
    """on_epoch runs before the checkpoint: a curve kept with it is complete after a resume."""
    images, labels = tiny_data()
    settings = dataclasses.replace(TINY, epochs=3)
    full: dict[int, float] = {}
    train_unet(images, labels, settings, seed=5, progress=False, on_epoch=lambda e, m: full.__setitem__(e, m["loss"]))
    kept: dict[int, float] = {}

    def kill_after_first(epoch: int, loss: float) -> None:
        if epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_unet(images, labels, settings, seed=5, progress=False, checkpoint_dir=tmp_path,
                   on_epoch=lambda e, m: kept.__setitem__(e, m["loss"]), on_epoch_end=kill_after_first)
    assert list(kept) == [1]
    train_unet(images, labels, settings, seed=5, progress=False, checkpoint_dir=tmp_path,
               on_epoch=lambda e, m: kept.__setitem__(e, m["loss"]))
    assert list(kept) == [1, 2, 3] and kept == pytest.approx(full)


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_patch_items_depend_only_on_their_position():
    images, labels = tiny_data()
    dataset = unet3d.PatchDataset(images, labels, TINY, seed=3, steps=2)
    assert len(dataset) == TINY.epochs * 2 * TINY.batch_size
    backwards = [dataset[k] for k in reversed(range(len(dataset)))][::-1]
    fresh = unet3d.PatchDataset(images, labels, TINY, seed=3, steps=2)
    resumed = unet3d.PatchDataset(images, labels, TINY, seed=3, steps=2, first_epoch=1)
    for k in range(len(dataset)):
        for a, b in zip(backwards[k], fresh[k]):
            assert torch.equal(a, b)
    for k in range(len(resumed)):
        assert torch.equal(resumed[k][0], fresh[k + 2 * TINY.batch_size][0])


@pytest.mark.slow
def test_loader_workers_do_not_change_the_result():
    images, labels = tiny_data()
    inline = train_unet(images, labels, dataclasses.replace(TINY, loader_workers=0), seed=4, progress=False)
    workers = train_unet(images, labels, dataclasses.replace(TINY, loader_workers=2), seed=4, progress=False)
    assert_same_weights(inline, workers)


def test_training_reads_volumes_on_demand():
    images, labels = tiny_data()
    reads: list[int] = []

    class Recording(list):
        def __getitem__(self, i):
            reads.append(i)
            return super().__getitem__(i)

    model = train_unet(Recording(images), labels, dataclasses.replace(TINY, epochs=1), seed=0, progress=False)
    assert_same_weights(model, train_unet(images, labels, dataclasses.replace(TINY, epochs=1), seed=0, progress=False))
    assert sorted(set(reads)) == [0, 1, 2] and len(reads) == 3 + 2 * TINY.batch_size  # a check pass + 2 steps


def test_loader_workers_default_by_device():
    assert unet3d.loader_workers(TINY, "cpu") == 0
    assert unet3d.loader_workers(dataclasses.replace(TINY, loader_workers=3), "cpu") == 3
    assert 1 <= unet3d.loader_workers(TINY, "cuda") <= 4


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_is_refused_on_cpu(precision):
    images, labels = tiny_data()
    settings = dataclasses.replace(TINY, precision=precision)
    with pytest.raises(CliscError, match=f"unet.precision={precision} needs a CUDA device"):
        train_unet(images, labels, settings, seed=0, progress=False)
    with pytest.raises(CliscError, match="needs a CUDA device"):
        predict_volume(SignOfImage(), images[0], settings)


def test_channels_last_on_cpu_trains_to_the_same_weights():
    images, labels = tiny_data()
    plain = train_unet(images, labels, TINY, seed=2, progress=False)
    cl = train_unet(images, labels, dataclasses.replace(TINY, channels_last=True), seed=2, progress=False)
    for (name, a), b in zip(state_of(plain).items(), state_of(cl).values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


@CUDA
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("cl", [False, True])
def test_cuda_training_and_inference(precision, cl, tmp_path):
    images, labels = tiny_data()
    settings = dataclasses.replace(TINY, precision=precision, channels_last=cl, epochs=2, loader_workers=1)
    model = train_unet(images, labels, settings, seed=0, device="cuda", progress=False, checkpoint_dir=tmp_path)
    assert next(model.parameters()).is_cuda and next(model.parameters()).dtype == torch.float32
    assert all(torch.isfinite(p).all() for p in model.parameters())
    saved = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert bool(saved["scaler"]) == (precision == "fp16")  # the loss scale is checkpointed for fp16
    prediction = predict_volume(model, images[0], settings, "cuda")
    assert prediction.shape == images[0].shape and prediction.dtype == np.uint8
