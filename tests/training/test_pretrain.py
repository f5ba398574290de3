"""Pretraining: per-epoch checkpoints, exact resume, subsets, and refusal to resume with other options."""

import pytest
import torch

import bnncl.training.pretrain as pretrain_mod
from bnncl.checkpoint import load_model, read_checkpoint
from bnncl.core.errors import CheckpointError, ConfigError
from bnncl.training.pretrain import PretrainOptions, pretrain
from fixtures import write_idx_dataset


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fmnist")
    write_idx_dataset(d, n_train=60, n_test=20, seed=1)
    return d


def _opts(data_dir, out, **kw):
    base = dict(data=str(data_dir), epochs=2, batch_size=16, out=str(out), progress=False, max_steps_per_epoch=2)
    return PretrainOptions(**{**base, **kw})


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_checkpoint_written_every_epoch_and_loadable(data_dir, tmp_path, monkeypatch):
    saves = []
    real_save = pretrain_mod.save_checkpoint

    def spy(path, model, **extra):
        real_save(path, model, **extra)
        saves.append(read_checkpoint(path)["epoch"])

    monkeypatch.setattr(pretrain_mod, "save_checkpoint", spy)
    model, result = pretrain(_opts(data_dir, tmp_path / "m.pt"))
    assert saves == [1, 2]
    loaded, payload = load_model(tmp_path / "m.pt")
    _assert_same_state(loaded.state_dict(), model.state_dict())
    assert [h["epoch"] for h in payload["meta"]["history"]] == [1, 2]
    assert result["test"]["n"] == 20
    assert 0.0 <= result["test"]["accuracy"] <= 1.0
    # Binary latent weights stay clipped to [-1, 1].
    for name, p in model.named_parameters():
        if ".conv.weight" in name and "stem" not in name:
            assert p.abs().max() <= 1.0


def test_resume_after_interruption_equals_uninterrupted_run(data_dir, tmp_path, monkeypatch):
    straight, _ = pretrain(_opts(data_dir, tmp_path / "straight.pt"))

    real_save = pretrain_mod.save_checkpoint

    def save_then_die(path, model, **extra):
        real_save(path, model, **extra)
        raise KeyboardInterrupt  # the process dies right after the epoch-1 checkpoint

    monkeypatch.setattr(pretrain_mod, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        pretrain(_opts(data_dir, tmp_path / "resumed.pt"))
    assert read_checkpoint(tmp_path / "resumed.pt")["epoch"] == 1
    monkeypatch.setattr(pretrain_mod, "save_checkpoint", real_save)

    resumed, result = pretrain(_opts(data_dir, tmp_path / "resumed.pt", resume=True))
    _assert_same_state(resumed.state_dict(), straight.state_dict())
    assert [h["epoch"] for h in result["history"]] == [1, 2]


def test_same_seed_same_weights_other_seed_differs(data_dir, tmp_path):
    a, _ = pretrain(_opts(data_dir, tmp_path / "a.pt", epochs=1))
    b, _ = pretrain(_opts(data_dir, tmp_path / "b.pt", epochs=1))
    c, _ = pretrain(_opts(data_dir, tmp_path / "c.pt", epochs=1, seed=1))
    _assert_same_state(a.state_dict(), b.state_dict())
    assert not torch.equal(a.state_dict()["layers.head.weight"], c.state_dict()["layers.head.weight"])


def test_resume_with_changed_options_is_refused(data_dir, tmp_path):
    pretrain(_opts(data_dir, tmp_path / "m.pt", epochs=1))
    with pytest.raises(CheckpointError,
                       match=r"m\.pt: cannot resume, the training options changed \(lr: 0\.002 -> 0\.01\)"):
        pretrain(_opts(data_dir, tmp_path / "m.pt", epochs=1, lr=0.01, resume=True))


def test_base_classes_subset(data_dir, tmp_path):
    model, result = pretrain(_opts(data_dir, tmp_path / "m.pt", epochs=1, classes=[0, 1, 2]))
    payload = read_checkpoint(tmp_path / "m.pt")
    assert payload["meta"]["trained_classes"] == [0, 1, 2]
    assert set(result["test"]["per_class"]) <= {"T-shirt/top", "Trouser", "Pullover"}
    assert model.config.num_classes == 10  # the head keeps a row for every class


def test_invalid_options(data_dir, tmp_path):
    with pytest.raises(ConfigError, match="epochs must be at least 1"):
        _opts(data_dir, tmp_path / "m.pt", epochs=0)
    with pytest.raises(ConfigError, match="preset 'cifar10' takes"):
        pretrain(_opts(data_dir, tmp_path / "m.pt", preset="cifar10"))
