"""Checkpoints: exact round trip, every damaged or foreign file refused with a CheckpointError naming it,
no temp files."""

import os

import pytest
import torch

from bnncl.checkpoint import load_model, read_checkpoint, save_checkpoint
from bnncl.core.errors import CheckpointError
from bnncl.models import BackboneConfig, build_model


def _config(**kw):
    base = dict(input_shape=(8, 8, 1), num_classes=4, stem_channels=4, stages=((4, 1, 1), (8, 1, 2)), name="tiny")
    return BackboneConfig(**{**base, **kw})


def _trained_like_model(seed=30, **kw):
    """A small model whose weights and BN statistics are all away from their initial values."""
    torch.manual_seed(seed)
    model = build_model(_config(**kw))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape) * 0.1)
        model.train()
        for _ in range(2):
            model(torch.randn(4, 1, 8, 8))  # moves the BN running statistics
    return model.eval()


def test_round_trip_gives_identical_outputs(tmp_path):
    model = _trained_like_model()
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, epoch=3, meta={"note": "x"})
    loaded, payload = load_model(path)
    assert not loaded.training
    assert loaded.config == model.config
    assert payload["epoch"] == 3 and payload["meta"] == {"note": "x"}
    sd, ld = model.state_dict(), loaded.state_dict()
    assert sd.keys() == ld.keys()
    for k in sd:
        assert torch.equal(sd[k], ld[k]), k
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # A fresh model of the same config gives different outputs, so the equality above is not vacuous.
    with torch.no_grad():
        assert not torch.equal(build_model(model.config).eval()(x), model(x))


def test_load_with_matching_expect_accepts_other_name(tmp_path):
    model = _trained_like_model()
    save_checkpoint(tmp_path / "m.pt", model)
    loaded, _ = load_model(tmp_path / "m.pt", expect=_config(name="renamed"))
    assert loaded.config == model.config


def _assert_error_names_path(path, fn=load_model, **kw):
    with pytest.raises(CheckpointError) as info:
        fn(path, **kw)
    assert str(path) in str(info.value)
    return str(info.value)


def test_missing_file(tmp_path):
    _assert_error_names_path(tmp_path / "absent.pt")
    _assert_error_names_path(tmp_path / "absent.pt", fn=read_checkpoint)


def test_directory_instead_of_file(tmp_path):
    _assert_error_names_path(tmp_path)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.0])
def test_truncated_file(tmp_path, keep):
    path = tmp_path / "m.pt"
    save_checkpoint(path, _trained_like_model())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    _assert_error_names_path(path)


def test_garbage_bytes(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"this is not a checkpoint\n" * 80)
    _assert_error_names_path(path)


@pytest.mark.parametrize(
    "obj",
    [
        {"weights": torch.zeros(3)},
        torch.zeros(2, 2),
        {"format": "other", "version": 1, "config": {}, "model": {}},
    ],
)
def test_non_bnncl_torch_file(tmp_path, obj):
    path = tmp_path / "foreign.pt"
    torch.save(obj, path)
    msg = _assert_error_names_path(path)
    assert "bnncl" in msg


def test_plain_state_dict_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(_trained_like_model().state_dict(), path)
    _assert_error_names_path(path)


def test_checkpoint_of_another_architecture(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, _trained_like_model())
    msg = _assert_error_names_path(path, expect=_config(num_classes=6))
    assert "num_classes" in msg
    _assert_error_names_path(path, expect=_config(stages=((4, 1, 1), (16, 1, 2))))
    _assert_error_names_path(path, expect=_config(shortcut="binary"))


def test_weights_that_do_not_fit_the_named_architecture(tmp_path):
    """An envelope whose config and weights disagree (hand-edited or mixed files) is refused, not half-loaded."""
    path = tmp_path / "m.pt"
    model = _trained_like_model()
    other = build_model(_config(num_classes=6))
    torch.save({"format": "bnncl-checkpoint", "version": 1, "config": model.config.to_dict(),
                "model": other.state_dict()}, path)
    _assert_error_names_path(path)
    sd = model.state_dict()
    sd.pop(next(iter(sd)))
    torch.save({"format": "bnncl-checkpoint", "version": 1, "config": model.config.to_dict(), "model": sd}, path)
    _assert_error_names_path(path)


def test_save_leaves_only_the_checkpoint(tmp_path):
    d = tmp_path / "ckpts"
    path = d / "m.pt"
    save_checkpoint(path, _trained_like_model(seed=31))
    assert sorted(os.listdir(d)) == ["m.pt"]
    # Overwriting replaces the file in place, still without leftovers, and the new content is what loads.
    second = _trained_like_model(seed=32)
    save_checkpoint(path, second)
    assert sorted(os.listdir(d)) == ["m.pt"]
    loaded, _ = load_model(path)
    for k, v in second.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_failed_save_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "m.pt"
    first = _trained_like_model(seed=33)
    save_checkpoint(path, first)
    before = path.read_bytes()
    with pytest.raises(Exception):
        save_checkpoint(path, first, unpicklable=lambda: 0)  # a lambda cannot be pickled
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.pt"]


def test_extra_that_cannot_be_loaded_back_is_refused_before_writing(tmp_path):
    path = tmp_path / "m.pt"
    model = _trained_like_model()
    save_checkpoint(path, model)
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="m.pt: cannot save, an extra entry is not plain data"):
        save_checkpoint(path, model, meta={"activation": torch.nn.ReLU})
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.pt"]


@pytest.mark.parametrize("where", ["a weight", "a BN statistic", "the optimizer state"])
def test_a_flipped_byte_inside_a_tensor_is_refused(tmp_path, where):
    """torch's zip does not check the bytes of a tensor: the checkpoint's own SHA-256 does."""
    model = _trained_like_model()
    momentum = torch.arange(1000, dtype=torch.float32) * 0.5 + 7.25  # distinctive bytes, easy to find
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, optimizer={"state": {0: {"momentum": momentum}}})
    read_checkpoint(path)  # intact: loads
    tensor = {"a weight": model.stem.conv.weight if hasattr(model, "stem") else next(model.parameters()),
              "a BN statistic": next(b for n, b in model.named_buffers() if n.endswith("running_var")),
              "the optimizer state": momentum}[where]
    data = bytearray(path.read_bytes())
    at = data.find(tensor.detach().contiguous().numpy().tobytes()[:32])
    assert at > 0, "the tensor's bytes are stored as they are"
    data[at + 5] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{path}: checksum mismatch"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_model(path)


def test_a_directory_or_a_foreign_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=f"{tmp_path}: is a directory"):
        read_checkpoint(tmp_path)
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(CheckpointError, match=f"{other}: not a readable checkpoint"):
        read_checkpoint(other)
