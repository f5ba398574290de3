"""Every bad input a user can pass gets a one-line error, never a traceback; no command destroys a user's file.

One table of cases, ``(id, argv, expected substrings of the error line, paths that must stay as they are)``, each run
through the real entry point in-process (``bnncl.cli.main``), and one test that holds every case to the same rules:

1. exit status 2 (an uncaught exception propagates: its traceback names the case);
2. stderr is exactly one line, starting with ``bnncl: error: ``;
3. the line holds every expected substring (the path of the file at fault, and a word saying what is wrong);
4. every listed path is as it was (a file: same bytes and mtime; a directory: same entries; absent: still absent),
   and no temporary file (``*.tmp``) is left anywhere.

Templates such as ``{ckpt}`` in a case name files of the world built once per module (``_build``); every case runs on
fresh copies of the files it names, so a case that damages a file cannot spoil another.
"""

from __future__ import annotations

import os
import shutil
import struct
import zipfile
from pathlib import Path
from string import Formatter
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bnncl.checkpoint import save_checkpoint
from bnncl.cli import main
from bnncl.core.options import LearnOptions
from bnncl.device import Learner
from bnncl.device.learner import STATE_FORMAT, STATE_VERSION
from bnncl.device.modelfile import FORMAT as MODEL_FORMAT
from bnncl.device.modelfile import VERSION as MODEL_VERSION
from bnncl.device.modelfile import read_container, write_container
from bnncl.export import export_checkpoint
from bnncl.models import BackboneConfig
from fixtures import idx_bytes, randomized, write_idx_dataset

# -- the cases ------------------------------------------------------------------------------------------------------

# The flags that keep a command cheap when it gets past the bad input (they are valid; the bad input is the point).
PRETRAIN = ["pretrain", "--data", "{data}", "--quiet", "--epochs", "1", "--batch-size", "8", "--max-steps", "1"]
LEARN_FLAGS = ["--experiences", "2", "--epochs", "1", "--batch-size", "8", "--replay-size", "12", "--replay-batch",
               "4", "--quiet"]
DEVICE_LEARN = ["device", "learn", "{model}", "--data", "{data}", *LEARN_FLAGS]


def learn(cfg: str) -> list[str]:
    return ["learn", "--config", cfg, "--checkpoint", "{ckpt}", "--data", "{data}", "--out", "{out}", "--quiet"]


def device_learn(cfg: str) -> list[str]:
    return ["device", "learn", "{model}", "--config", cfg, "--data", "{data}", "--out", "{out}", "--quiet"]


# bad config files (name -> the bad value, and the words the error must hold), run by learn and by device learn
CONFIG_CASES = [
    ("cfg_epochs_text", ["epochs", "whole number"]),
    ("cfg_epochs_float", ["epochs", "whole number"]),
    ("cfg_epochs_bool", ["epochs", "whole number"]),
    ("cfg_lr_text", ["lr", "number"]),
    ("cfg_seed_text", ["seed", "whole number"]),
    ("cfg_learn_int", ["learn", "must be"]),
    ("cfg_first_float", ["first", "whole number"]),
    ("cfg_replay_size_float", ["replay_size", "whole number"]),
    ("cfg_batch_size_huge", ["batch_size", "must be"]),
    ("cfg_unknown_key", ["unknown key", "epoch"]),
    ("cfg_unknown_strategy", ["unknown strategy", "ar2"]),
    ("cfg_no_strategy", ["strategies is empty"]),
]

CASES = [
    # summary
    ("summary-checkpoint-missing", ["summary", "--checkpoint", "{nope}.pt"], ["{nope}.pt", "no such"], ["{nope}.pt"]),
    ("summary-checkpoint-garbage", ["summary", "--checkpoint", "{ckpt_garbage}"],
     ["{ckpt_garbage}", "corrupt"], ["{ckpt_garbage}"]),
    ("summary-checkpoint-directory", ["summary", "--checkpoint", "{somedir}"], ["{somedir}", "is a directory"],
     ["{somedir}"]),
    ("summary-json-directory", ["summary", "--json", "{somedir}"], ["{somedir}", "is a directory"], ["{somedir}"]),
    ("summary-json-under-file", ["summary", "--json", "{notes}/s.json"], ["{notes}", "not a directory"], ["{notes}"]),
    ("summary-json-unwritable-dir", ["summary", "--json", "{unwritable}/s.json"], ["{unwritable}", "cannot write"],
     ["{unwritable}"]),
    ("summary-json-over-a-non-json-file", ["summary", "--json", "{notes}"], ["{notes}", "overwrite"], ["{notes}"]),
    ("summary-num-classes-1", ["summary", "--num-classes", "1"], ["num_classes", "at least 2"], []),
    ("summary-num-classes-text", ["summary", "--num-classes", "ten"], ["--num-classes", "int"], []),
    # pretrain
    ("pretrain-out-directory", [*PRETRAIN, "--out", "{somedir}"], ["{somedir}", "is a directory"], ["{somedir}"]),
    ("pretrain-out-under-file", [*PRETRAIN, "--out", "{notes}/m.pt"], ["{notes}", "not a directory"], ["{notes}"]),
    ("pretrain-out-existing-non-checkpoint", [*PRETRAIN, "--out", "{notes}"], ["{notes}", "overwrite"], ["{notes}"]),
    ("pretrain-out-is-a-model-file", [*PRETRAIN, "--out", "{model}"], ["{model}", "overwrite"], ["{model}"]),
    ("pretrain-resume-corrupt-checkpoint", [*PRETRAIN, "--resume", "--out", "{ckpt_garbage}"],
     ["{ckpt_garbage}", "not a bnncl checkpoint"], ["{ckpt_garbage}"]),
    ("pretrain-json-directory", [*PRETRAIN, "--out", "{out}/m.pt", "--json", "{somedir}"],
     ["{somedir}", "is a directory"], ["{somedir}"]),
    ("pretrain-classes-text", [*PRETRAIN, "--classes", "a,b", "--out", "{out}/m.pt"], ["--classes", "integers"],
     ["{out}"]),
    ("pretrain-classes-out-of-range", [*PRETRAIN, "--classes", "3,12", "--out", "{out}/m.pt"], ["12", "out of range"],
     ["{out}"]),
    ("pretrain-classes-empty", [*PRETRAIN, "--classes", ",", "--out", "{out}/m.pt"], ["empty class list"], ["{out}"]),
    ("pretrain-epochs-0", [*PRETRAIN, "--epochs", "0", "--out", "{out}/m.pt"], ["epochs", "at least 1"], ["{out}"]),
    ("pretrain-batch-size-0", [*PRETRAIN, "--batch-size", "0", "--out", "{out}/m.pt"], ["batch size", "at least 1"],
     ["{out}"]),
    ("pretrain-fraction-2", [*PRETRAIN, "--fraction", "2", "--out", "{out}/m.pt"], ["fraction", "(0, 1]"], ["{out}"]),
    ("pretrain-fraction-0", [*PRETRAIN, "--fraction", "0", "--out", "{out}/m.pt"], ["fraction", "(0, 1]"], ["{out}"]),
    ("pretrain-fraction-nan", [*PRETRAIN, "--fraction", "nan", "--out", "{out}/m.pt"], ["fraction", "nan"],
     ["{out}"]),
    ("pretrain-lr-0", [*PRETRAIN, "--lr", "0", "--out", "{out}/m.pt"], ["learning rate", "positive"], ["{out}"]),
    ("pretrain-lr-inf", [*PRETRAIN, "--lr", "inf", "--out", "{out}/m.pt"], ["learning rate", "inf"], ["{out}"]),
    ("pretrain-lr-text", [*PRETRAIN, "--lr", "fast", "--out", "{out}/m.pt"], ["--lr", "'fast'"], ["{out}"]),
    ("pretrain-binary-boundary-unknown", [*PRETRAIN, "--binary-boundary", "block99", "--out", "{out}/m.pt"],
     ["binary_boundary", "block99"], ["{out}"]),
    ("pretrain-data-missing-dir", [*PRETRAIN, "--data", "{nope}", "--out", "{out}/m.pt"],
     ["{nope}", "no such"], ["{out}"]),
    ("pretrain-data-is-a-file", [*PRETRAIN, "--data", "{notes}", "--out", "{out}/m.pt"], ["{notes}", "not a directory"],
     ["{out}", "{notes}"]),
    ("pretrain-idx-truncated", [*PRETRAIN, "--data", "{idx_truncated}", "--out", "{out}/m.pt"],
     ["{idx_truncated}/train-images-idx3-ubyte", "truncated"], ["{idx_truncated}/train-images-idx3-ubyte", "{out}"]),
    ("pretrain-idx-header-past-data", [*PRETRAIN, "--data", "{idx_past}", "--out", "{out}/m.pt"],
     ["{idx_past}/train-images-idx3-ubyte", "truncated"], ["{idx_past}/train-images-idx3-ubyte", "{out}"]),
    ("pretrain-idx-header-over-uint32", [*PRETRAIN, "--data", "{idx_u32}", "--out", "{out}/m.pt"],
     ["{idx_u32}/train-images-idx3-ubyte", "truncated"], ["{idx_u32}/train-images-idx3-ubyte", "{out}"]),
    ("pretrain-idx-header-product-wraps-no-data", [*PRETRAIN, "--data", "{idx_wrap0}", "--out", "{out}/m.pt"],
     ["{idx_wrap0}/train-images-idx3-ubyte", "truncated"], ["{idx_wrap0}/train-images-idx3-ubyte", "{out}"]),
    ("pretrain-idx-header-product-wraps-with-data", [*PRETRAIN, "--data", "{idx_wrap}", "--out", "{out}/m.pt"],
     ["{idx_wrap}/train-images-idx3-ubyte", "truncated"], ["{idx_wrap}/train-images-idx3-ubyte", "{out}"]),
    ("pretrain-idx-bad-magic", [*PRETRAIN, "--data", "{idx_magic}", "--out", "{out}/m.pt"],
     ["{idx_magic}/train-images-idx3-ubyte", "magic"], ["{idx_magic}/train-images-idx3-ubyte", "{out}"]),
    ("pretrain-idx-label-count", [*PRETRAIN, "--data", "{idx_count}", "--out", "{out}/m.pt"],
     ["{idx_count}/train-labels-idx1-ubyte", "59 labels"], ["{idx_count}/train-labels-idx1-ubyte", "{out}"]),
    ("pretrain-idx-label-out-of-range", [*PRETRAIN, "--data", "{idx_label}", "--out", "{out}/m.pt"],
     ["{idx_label}/train-labels-idx1-ubyte", "out of range"], ["{idx_label}/train-labels-idx1-ubyte", "{out}"]),
    ("pretrain-gzip-corrupt", [*PRETRAIN, "--data", "{idx_gz}", "--out", "{out}/m.pt"],
     ["{idx_gz}/train-images-idx3-ubyte.gz", "corrupt"], ["{idx_gz}/train-images-idx3-ubyte.gz", "{out}"]),
    # evaluate
    ("evaluate-checkpoint-missing", ["evaluate", "{nope}.pt", "--data", "{data}"], ["{nope}.pt", "no such"], []),
    ("evaluate-checkpoint-garbage", ["evaluate", "{ckpt_garbage}", "--data", "{data}"], ["{ckpt_garbage}", "corrupt"],
     ["{ckpt_garbage}"]),
    ("evaluate-checkpoint-truncated", ["evaluate", "{ckpt_truncated}", "--data", "{data}"],
     ["{ckpt_truncated}", "truncated"], ["{ckpt_truncated}"]),
    ("evaluate-checkpoint-flipped-byte", ["evaluate", "{ckpt_flipped}", "--data", "{data}"],
     ["{ckpt_flipped}", "checksum"], ["{ckpt_flipped}"]),
    ("evaluate-checkpoint-directory", ["evaluate", "{somedir}", "--data", "{data}"], ["{somedir}", "is a directory"],
     ["{somedir}"]),
    ("evaluate-foreign-torch-file", ["evaluate", "{ckpt_foreign}", "--data", "{data}"],
     ["{ckpt_foreign}", "not a bnncl checkpoint"], ["{ckpt_foreign}"]),
    ("evaluate-checkpoint-garbled-config", ["evaluate", "{ckpt_garbled}", "--data", "{data}"],
     ["{ckpt_garbled}", "invalid architecture"], ["{ckpt_garbled}"]),
    ("evaluate-wrong-dataset-shape", ["evaluate", "{ckpt}", "--data", "{data8}"], ["{ckpt}", "28x28x1", "8x8x1"],
     ["{ckpt}"]),
    ("evaluate-classes-out-of-range", ["evaluate", "{ckpt}", "--data", "{data}", "--classes", "10"],
     ["10", "out of range"], ["{ckpt}"]),
    ("evaluate-split-unknown", ["evaluate", "{ckpt}", "--data", "{data}", "--split", "dev"], ["--split", "'dev'"], []),
    ("evaluate-out-directory", ["evaluate", "{ckpt}", "--data", "{data}", "--out", "{somedir}"],
     ["{somedir}", "is a directory"], ["{somedir}", "{ckpt}"]),
    ("evaluate-out-is-the-checkpoint", ["evaluate", "{ckpt}", "--data", "{data}", "--out", "{ckpt}"],
     ["{ckpt}", "overwrite"], ["{ckpt}"]),
    # learn: the config file itself
    ("learn-config-missing", learn("{nope}.toml"), ["{nope}.toml", "no such"], []),
    ("learn-config-directory", learn("{somedir}"), ["{somedir}", "is a directory"], ["{somedir}"]),
    ("learn-config-not-utf8", learn("{cfg_not_utf8}"), ["{cfg_not_utf8}", "UTF-8"], ["{cfg_not_utf8}"]),
    ("learn-config-not-toml", learn("{cfg_not_toml}"), ["{cfg_not_toml}", "not valid TOML"], ["{cfg_not_toml}"]),
    # learn: bad values in the config (see CONFIG_CASES), then the flags
    *[(f"learn-{name[4:].replace('_', '-')}", learn(f"{{{name}}}"), [f"{{{name}}}", *words], [f"{{{name}}}", "{ckpt}"])
      for name, words in CONFIG_CASES],
    ("learn-lr-layer-unknown", learn("{cfg_good}") + ["--lr-layer", "block42"], ["block42", "no layer"],
     ["{ckpt}"]),
    ("learn-out-is-a-file", learn("{cfg_good}")[:-3] + ["--out", "{notes}", "--quiet"], ["{notes}", "not a directory"],
     ["{notes}", "{ckpt}"]),
    # report
    ("report-run-missing", ["report", "{nope}"], ["{nope}", "no such"], []),
    ("report-result-not-json", ["report", "{run_not_json}"], ["{run_not_json}/result.json", "not a bnncl learn result"],
     ["{run_not_json}/result.json"]),
    ("report-result-not-utf8", ["report", "{run_not_utf8}"], ["{run_not_utf8}/result.json", "utf-8"],
     ["{run_not_utf8}/result.json"]),
    ("report-result-a-list", ["report", "{run_list}"], ["{run_list}/result.json", "not a bnncl learn result"],
     ["{run_list}/result.json"]),
    ("report-run-without-strategy", ["report", "{run_no_strategy}"], ["{run_no_strategy}/result.json", "strategy"],
     ["{run_no_strategy}/result.json"]),
    ("report-runs-a-string", ["report", "{run_runs_text}"], ["{run_runs_text}/result.json", "runs"],
     ["{run_runs_text}/result.json"]),
    ("report-result-a-directory", ["report", "{run_result_dir}"], ["{run_result_dir}/result.json", "is a directory"],
     ["{run_result_dir}/result.json"]),
    ("report-out-is-a-file", ["report", "{run}", "--out", "{notes}"], ["{notes}", "not a directory"],
     ["{notes}", "{run}/result.json"]),
    ("report-out-is-the-run", ["report", "{run}", "--out", "{run}"], ["{run}", "its own report.md"],
     ["{run}/report.md", "{run}/result.json"]),
    # export
    ("export-checkpoint-missing", ["export", "{nope}.pt", "--out", "{out}.bnn"], ["{nope}.pt", "no such"],
     ["{out}.bnn"]),
    ("export-checkpoint-garbage", ["export", "{ckpt_garbage}", "--out", "{out}.bnn"], ["{ckpt_garbage}", "corrupt"],
     ["{ckpt_garbage}", "{out}.bnn"]),
    ("export-out-is-the-checkpoint", ["export", "{ckpt}", "--out", "{ckpt}"], ["{ckpt}", "overwrite"], ["{ckpt}"]),
    ("export-out-is-the-checkpoint-respelled", ["export", "{ckpt}", "--out", "{root}/./ckpt.pt"],
     ["ckpt.pt", "overwrite"], ["{ckpt}"]),
    ("export-out-existing-non-model-file", ["export", "{ckpt}", "--out", "{notes}"], ["{notes}", "overwrite"],
     ["{notes}", "{ckpt}"]),
    ("export-out-is-a-dataset-file", ["export", "{ckpt}", "--out", "{data}/train-images-idx3-ubyte.gz"],
     ["{data}/train-images-idx3-ubyte.gz", "overwrite"], ["{data}/train-images-idx3-ubyte.gz", "{ckpt}"]),
    ("export-lr-layer-unknown", ["export", "{ckpt}", "--out", "{out}.bnn", "--lr-layer", "block42"],
     ["block42", "no layer"], ["{ckpt}", "{out}.bnn"]),
    ("export-out-directory", ["export", "{ckpt}", "--out", "{somedir}"], ["{somedir}", "is a directory"],
     ["{somedir}", "{ckpt}"]),
    ("export-out-under-file", ["export", "{ckpt}", "--out", "{notes}/m.bnn"], ["{notes}", "not a directory"],
     ["{notes}", "{ckpt}"]),
    # device predict
    ("predict-model-missing", ["device", "predict", "{nope}.bnn", "--data", "{data}"], ["{nope}.bnn", "no such"], []),
    ("predict-model-truncated", ["device", "predict", "{model_truncated}", "--data", "{data}"],
     ["{model_truncated}", "truncated"], ["{model_truncated}"]),
    ("predict-model-flipped-byte", ["device", "predict", "{model_flipped}", "--data", "{data}"],
     ["{model_flipped}", "checksum"], ["{model_flipped}"]),
    ("predict-model-is-a-checkpoint", ["device", "predict", "{ckpt}", "--data", "{data}"],
     ["{ckpt}", "not a bnncl model file"], ["{ckpt}"]),
    ("predict-model-directory", ["device", "predict", "{somedir}", "--data", "{data}"], ["{somedir}", "is a directory"],
     ["{somedir}"]),
    ("predict-model-2-class-names-10-rows", ["device", "predict", "{model_2_names}", "--data", "{data}"],
     ["{model_2_names}", "class names"], ["{model_2_names}"]),
    ("predict-model-input-shape-not-the-stem", ["device", "predict", "{model_3_channels}", "--images", "{x_rgb}"],
     ["{model_3_channels}", "input"], ["{model_3_channels}"]),
    ("predict-images-not-npy", ["device", "predict", "{model}", "--images", "{notes}"], ["{notes}", ".npy"],
     ["{notes}"]),
    ("predict-images-wrong-shape", ["device", "predict", "{model}", "--images", "{x_rgb}"], ["{x_rgb}", "shape"],
     ["{x_rgb}"]),
    ("predict-images-wrong-dtype", ["device", "predict", "{model}", "--images", "{x_float}"], ["{x_float}", "uint8"],
     ["{x_float}"]),
    ("predict-labels-shape-n-1", ["device", "predict", "{model}", "--images", "{x}", "--image-labels", "{y_column}"],
     ["{y_column}", "shape"], ["{y_column}"]),
    ("predict-labels-float", ["device", "predict", "{model}", "--images", "{x}", "--image-labels", "{y_float}"],
     ["{y_float}", "integer"], ["{y_float}"]),
    ("predict-labels-out-of-range", ["device", "predict", "{model}", "--images", "{x}", "--image-labels", "{y_range}"],
     ["{y_range}", "outside"], ["{y_range}"]),
    ("predict-labels-without-images", ["device", "predict", "{model}", "--data", "{data}", "--image-labels", "{y}"],
     ["--image-labels", "--images"], []),
    ("predict-batch-size-0", ["device", "predict", "{model}", "--images", "{x}", "--batch-size", "0"],
     ["batch", "at least 1"], []),
    ("predict-batch-size-negative", ["device", "predict", "{model}", "--data", "{data}", "--batch-size", "-5"],
     ["batch", "at least 1"], []),
    ("predict-out-directory", ["device", "predict", "{model}", "--images", "{x}", "--out", "{somedir}"],
     ["{somedir}", "is a directory"], ["{somedir}", "{model}"]),
    ("predict-out-is-the-images", ["device", "predict", "{model}", "--images", "{x}", "--out", "{x}"],
     ["{x}", "overwrite"], ["{x}", "{model}"]),
    ("predict-out-is-the-model", ["device", "predict", "{model}", "--images", "{x}", "--out", "{model}"],
     ["{model}", "overwrite"], ["{model}"]),
    # device learn
    ("device-learn-state-truncated", [*DEVICE_LEARN, "--out", "{out}", "--state", "{state_truncated}"],
     ["{state_truncated}", "truncated"], ["{state_truncated}"]),
    ("device-learn-state-of-another-model", [*DEVICE_LEARN, "--out", "{out}", "--state", "{state_other_model}"],
     ["{state_other_model}", "another model"], ["{state_other_model}"]),
    ("device-learn-state-directory", [*DEVICE_LEARN, "--out", "{out}", "--state", "{somedir}"],
     ["{somedir}", "is a directory"], ["{somedir}"]),
    ("device-learn-state-experience-minus-1", [*DEVICE_LEARN, "--out", "{out}", "--state", "{state_minus_1}"],
     ["{state_minus_1}", "experience"], ["{state_minus_1}"]),
    ("device-learn-state-is-the-model", [*DEVICE_LEARN, "--out", "{out}", "--state", "{model}"],
     ["{model}", "overwrite"], ["{model}"]),
    ("device-learn-model-2-class-names-10-rows", ["device", "learn", "{model_2_names}", "--data", "{data}",
                                                  *LEARN_FLAGS, "--out", "{out}"],
     ["{model_2_names}", "class names"], ["{model_2_names}", "{out}"]),
    ("device-learn-out-under-file", [*DEVICE_LEARN, "--out", "{notes}/run"], ["{notes}", "not a directory"],
     ["{notes}", "{model}"]),
    ("device-learn-frozen-chunk-0", [*DEVICE_LEARN, "--out", "{out}", "--frozen-chunk", "0"],
     ["frozen_chunk", "at least 1"], ["{out}"]),
    ("device-learn-config-missing", device_learn("{nope}.toml"), ["{nope}.toml", "no such"], ["{out}"]),
    ("device-learn-config-not-toml", device_learn("{cfg_not_toml}"), ["{cfg_not_toml}", "not valid TOML"], ["{out}"]),
    *[(f"device-learn-{name[4:].replace('_', '-')}", device_learn(f"{{{name}}}"), [f"{{{name}}}", *words],
       [f"{{{name}}}", "{model}"]) for name, words in CONFIG_CASES],
    # device info
    ("info-model-missing", ["device", "info", "{nope}.bnn"], ["{nope}.bnn", "no such"], []),
    ("info-model-directory", ["device", "info", "{somedir}"], ["{somedir}", "is a directory"], ["{somedir}"]),
    ("info-model-truncated", ["device", "info", "{model_truncated}"], ["{model_truncated}", "truncated"],
     ["{model_truncated}"]),
    ("info-model-2-class-names-10-rows", ["device", "info", "{model_2_names}"], ["{model_2_names}", "class names"],
     ["{model_2_names}"]),
    ("info-model-without-input-shape", ["device", "info", "{model_no_shape}"], ["{model_no_shape}", "input_shape"],
     ["{model_no_shape}"]),
]

# -- the world the cases run in -------------------------------------------------------------------------------------

TINY28 = dict(input_shape=(28, 28, 1), num_classes=10, stem_channels=8, stages=((8, 1, 1), (16, 1, 2)), name="tiny28")
CONFIG_HEAD = '[stream]\ntype = "nc"\nn_experiences = 2\n\n'
LEARN_SECTION = {"epochs": "1", "batch_size": "8", "replay_size": "12", "replay_batch": "4"}


def _config(top: str = "", stream: str = "", **learn) -> str:
    """A valid small config with ``top`` (before any table), ``stream`` lines and [learn] values (TOML text) changed."""
    section = "".join(f"{k} = {v}\n" for k, v in {**LEARN_SECTION, **learn}.items())
    return top + CONFIG_HEAD.replace("\n\n", "\n" + stream + "\n") + "[learn]\n" + section


CONFIGS = {
    "cfg_good": _config(),
    "cfg_not_toml": "this is not TOML\n",
    "cfg_epochs_text": _config(epochs='"four"'),
    "cfg_epochs_float": _config(epochs="1.5"),
    "cfg_epochs_bool": _config(epochs="true"),
    "cfg_lr_text": _config(lr='"0.01"'),
    "cfg_seed_text": _config(top='seed = "zero"\n'),
    "cfg_learn_int": 'learn = 5\n' + CONFIG_HEAD,
    "cfg_first_float": _config(stream="first = 6.0\n"),
    "cfg_replay_size_float": _config(replay_size="2.5"),
    "cfg_batch_size_huge": _config(batch_size="100000000000000000000"),
    "cfg_unknown_key": _config(epoch="2"),
    "cfg_unknown_strategy": _config(top='strategies = ["ar2"]\n'),
    "cfg_no_strategy": _config(top="strategies = []\n"),
}
DATA_VARIANTS = ("idx_truncated", "idx_past", "idx_u32", "idx_wrap0", "idx_wrap", "idx_magic", "idx_count", "idx_label")


def _paths(root: Path, unwritable: str) -> dict[str, str]:
    names = ["data", "data8", "idx_gz", *DATA_VARIANTS, "ckpt_truncated", "ckpt_flipped", "ckpt_garbage",
             "ckpt_foreign", "ckpt_garbled", "model_truncated", "model_flipped", "model_2_names", "model_3_channels",
             "model_no_shape", "state_truncated", "state_other_model", "state_minus_1", "x", "x_rgb", "x_float", "y",
             "y_column", "y_float", "y_range", "run", "run_not_json", "run_not_utf8", "run_list", "run_no_strategy",
             "run_runs_text", "run_result_dir", "somedir", "nope", "out", *CONFIGS]
    p = {n: str(root / n) for n in names}
    p.update(root=str(root), ckpt=str(root / "ckpt.pt"), model=str(root / "model.bnn"), notes=str(root / "notes.txt"),
             cfg_not_utf8=str(root / "cfg_not_utf8"), unwritable=unwritable)
    return p


def _idx_header(*dims: int) -> bytes:
    return bytes([0, 0, 0x08, len(dims)]) + b"".join(int(n).to_bytes(4, "big") for n in dims)


def _flip_byte_in_largest_entry(path: Path) -> None:
    """Flip one byte in the middle of a zip archive's largest member (the archive's structure stays intact)."""
    with zipfile.ZipFile(path) as z:
        info = max(z.infolist(), key=lambda i: i.compress_size)
    raw = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26: info.header_offset + 30])
    raw[info.header_offset + 30 + name_len + extra_len + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def _flip_byte_in_largest_tensor(path: Path) -> None:
    """Flip one byte in the middle of a flat container's largest tensor (docs/model-format.md: the tensor count at
    24, the table at 28, each 64-byte entry's data offset and size at 40 and 48)."""
    raw = bytearray(path.read_bytes())
    count, table = struct.unpack_from("<II", raw, 24)
    offset, size = max((struct.unpack_from("<QQ", raw, table + 64 * i + 40) for i in range(count)), key=lambda e: e[1])
    raw[offset + size // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def _rewrite_container(src: Path, dst: Path, fmt: str, version: int, change) -> None:
    """Read a checksummed container, let ``change(meta, arrays)`` alter it, write it back correctly checksummed."""
    meta, arrays = read_container(src, fmt, version)
    meta = {k: v for k, v in meta.items() if k not in ("format", "version", "sha256", "meta_sha256")}
    change(meta, arrays)
    write_container(dst, fmt, version, meta, arrays)


def _build(root: Path) -> None:
    """Every input of the cases, under ``root`` (the names of ``_paths``)."""
    p = {k: Path(v) for k, v in _paths(root, "").items() if k != "unwritable"}
    (root / "notes.txt").write_text("a user's notes: not to be overwritten\n")
    (root / "somedir").mkdir()
    (root / "somedir" / "keep.txt").write_text("keep\n")

    # datasets: a good one (gzip), one of 8x8 images, and raw ones each with one defect in a train file
    write_idx_dataset(p["data"], n_train=60, n_test=20)
    write_idx_dataset(p["data8"], n_train=20, n_test=10, hw=(8, 8))
    arrays = write_idx_dataset(p["idx_gz"], n_train=60, n_test=20)
    gz = p["idx_gz"] / "train-images-idx3-ubyte.gz"
    raw = bytearray(gz.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    gz.write_bytes(bytes(raw))
    x, y = arrays["train"]
    body = x.tobytes()
    for name in DATA_VARIANTS:
        write_idx_dataset(p[name], n_train=60, n_test=20, gz=False)
    images = {
        "idx_truncated": idx_bytes(x)[: len(idx_bytes(x)) // 2],
        "idx_past": _idx_header(60, 28, 29) + body,  # more data than the file holds
        "idx_u32": _idx_header(65536, 65536, 1) + body,  # 2^32 bytes: past uint32, within int64
        "idx_wrap0": _idx_header(2 ** 31, 2 ** 31, 4),  # 2^64 bytes: an int64 product wraps to 0
        "idx_wrap": _idx_header(2 ** 31, 2 ** 31, 4) + body,
        "idx_magic": bytes([0, 0, 0x0D, 3]) + idx_bytes(x)[4:],  # float32 type code
    }
    for name, data in images.items():
        (p[name] / "train-images-idx3-ubyte").write_bytes(data)
    (p["idx_count"] / "train-labels-idx1-ubyte").write_bytes(idx_bytes(y[:59]))
    (p["idx_label"] / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.where(np.arange(60) == 7, 10, y)))

    # checkpoints: a good tiny one and damaged ones
    ckpt = root / "ckpt.pt"
    save_checkpoint(ckpt, randomized(BackboneConfig(**TINY28), seed=0))
    good = ckpt.read_bytes()
    p["ckpt_truncated"].write_bytes(good[: len(good) // 2])
    p["ckpt_flipped"].write_bytes(good)
    _flip_byte_in_largest_entry(p["ckpt_flipped"])
    p["ckpt_garbage"].write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    torch.save({"weights": torch.zeros(3)}, p["ckpt_foreign"])
    # a garbled architecture, written by save_checkpoint itself (so whatever it stamps the file with is right)
    tiny = randomized(BackboneConfig(**TINY28), seed=0)
    garbled = {**tiny.config.to_dict(), "stages": [["eight", 1, 1], [16, 1, 2]]}
    save_checkpoint(p["ckpt_garbled"], SimpleNamespace(config=SimpleNamespace(to_dict=lambda: garbled),
                                                       state_dict=tiny.state_dict))

    # model files: a good one, another model's, damaged ones, and correctly checksummed inconsistent ones
    model = root / "model.bnn"
    export_checkpoint(ckpt, model)
    save_checkpoint(root / "other.pt", randomized(BackboneConfig(**TINY28), seed=1))
    export_checkpoint(root / "other.pt", root / "other.bnn")
    good = model.read_bytes()
    p["model_truncated"].write_bytes(good[: len(good) // 2])
    p["model_flipped"].write_bytes(good)
    _flip_byte_in_largest_tensor(p["model_flipped"])

    def set_meta(key, value):
        return lambda meta, arrays: meta.update({key: value})

    _rewrite_container(model, p["model_2_names"], MODEL_FORMAT, MODEL_VERSION, set_meta("class_names", ["a", "b"]))
    _rewrite_container(model, p["model_3_channels"], MODEL_FORMAT, MODEL_VERSION, set_meta("input_shape", [28, 28, 3]))
    _rewrite_container(model, p["model_no_shape"], MODEL_FORMAT, MODEL_VERSION,
                       lambda meta, arrays: meta.pop("input_shape"))

    # a real device-learn run (result.json, figures, state), and what is made from it
    argv = [a.format(model=model, data=p["data"]) for a in DEVICE_LEARN] + ["--out", str(p["run"])]
    assert main(argv) == 0
    state = p["run"] / "state_ar1.bnst"
    good = state.read_bytes()
    p["state_truncated"].write_bytes(good[: len(good) * 2 // 3])
    _rewrite_container(state, p["state_minus_1"], STATE_FORMAT, STATE_VERSION, set_meta("experiences", -1))
    options = LearnOptions.from_dict(read_container(state, STATE_FORMAT, STATE_VERSION)[0]["options"])
    Learner.open(root / "other.bnn", None, options).save(p["state_other_model"])
    result = (p["run"] / "result.json").read_text()
    for name, text in (("run_not_json", "{not json"), ("run_list", "[1, 2]"),
                       ("run_no_strategy", result.replace('"strategy": "ar1"', '"strateg": "ar1"')),
                       ("run_runs_text", '{"runs": "ar1"}')):
        p[name].mkdir()
        (p[name] / "result.json").write_text(text)
    assert "strateg" in (p["run_no_strategy"] / "result.json").read_text()
    p["run_not_utf8"].mkdir()
    (p["run_not_utf8"] / "result.json").write_bytes(b'{"runs": "\xff\xfe"}')
    (p["run_result_dir"] / "result.json").mkdir(parents=True)

    # arrays for device predict
    rng = np.random.default_rng(0)
    np.save(p["x"], rng.integers(0, 256, (4, 28, 28), dtype=np.uint8))
    np.save(p["x_rgb"], rng.integers(0, 256, (2, 28, 28, 3), dtype=np.uint8))
    np.save(p["x_float"], rng.random((4, 28, 28)).astype(np.float32))
    np.save(p["y"], np.array([0, 1, 2, 3]))
    np.save(p["y_column"], np.array([[0], [1], [2], [3]]))
    np.save(p["y_float"], np.array([0.0, 1.5, 2.0, 3.0]))
    np.save(p["y_range"], np.array([0, 1, 10, 3]))
    for name in ("x", "x_rgb", "x_float", "y", "y_column", "y_float", "y_range"):  # np.save appends .npy
        Path(f"{p[name]}.npy").rename(p[name])

    # config files
    for name, text in CONFIGS.items():
        p[name].write_text(text)
    (root / "cfg_not_utf8").write_bytes(b'seed = 0\n# caf\xe9 in Latin-1\n')


def _unwritable_dir(root: Path) -> str:
    """A directory no file can be created in: a read-only one, or, for root (whom permissions do not stop), /sys."""
    ro = root / "read-only"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        (ro / "probe").touch()
    except PermissionError:
        return str(ro)
    (ro / "probe").unlink()
    return "/sys"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The inputs of every case, built once; ``copy(dest, names)`` copies the entries a case names to ``dest`` and
    returns the paths of the copy."""
    import numba

    threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)  # tiny work on a shared machine: waking threads costs more than it saves
    numba.set_num_threads(1)
    golden = tmp_path_factory.mktemp("golden")
    _build(golden)
    unwritable = _unwritable_dir(tmp_path_factory.mktemp("unwritable"))

    def copy(dest: Path, names) -> dict[str, str]:
        dest.mkdir()
        for name in names:
            src = Path(_paths(golden, unwritable)[name])
            if src.parent == golden and src.is_dir():
                shutil.copytree(src, dest / src.name)
            elif src.parent == golden and src.exists():
                shutil.copy2(src, dest / src.name)
        return _paths(dest, unwritable)

    yield copy
    torch.set_num_threads(threads[0])
    numba.set_num_threads(threads[1])


def _state(path: str):
    """What must not change: a file's bytes and mtime, a directory's entries, or that nothing is there."""
    p = Path(path)
    if p.is_dir():
        return "directory", sorted(os.listdir(p))
    if p.exists():
        return "file", p.read_bytes(), p.stat().st_mtime_ns
    return "absent"


def _describe(state) -> str:
    if state == "absent":
        return state
    return f"a directory of {state[1]}" if state[0] == "directory" else f"{len(state[1])} bytes, mtime {state[2]}"


# -- the test -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, needles, unchanged", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_error(world, tmp_path, capsys, argv, needles, unchanged):
    paths = world(tmp_path / "w", {f for s in argv + needles + unchanged for _, f, _, _ in Formatter().parse(s) if f})
    argv, needles, unchanged = ([s.format(**paths) for s in v] for v in (argv, needles, unchanged))
    before = {p: _state(p) for p in unchanged}
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors exit from inside main
        code = e.code
    err = capsys.readouterr().err
    problems = []
    if code != 2:
        problems.append(f"exit status {code}, not 2")
    if not (err.startswith("bnncl: error: ") and err.endswith("\n") and err.count("\n") == 1):
        problems.append(f"stderr is not one 'bnncl: error: ' line: {err!r}")
    missing = [n for n in needles if n not in err]
    if missing:
        problems.append(f"the error does not say {missing}: {err!r}")
    for p in unchanged:
        after = _state(p)
        if after != before[p]:
            problems.append(f"{p} changed: was {_describe(before[p])}, now {_describe(after)}")
    left = sorted(str(f) for f in tmp_path.rglob("*.tmp"))
    if left:
        problems.append(f"temporary files left: {left}")
    assert not problems, "\n".join(problems)


# -- no command overwrites its input, even when told to replace files of another kind ------------------------------

# (command with one of its inputs as its output, the input). --force lets an output replace a file of another kind;
# never one of the command's inputs.
OWN_INPUT_CASES = [
    ("summary", ["summary", "--checkpoint", "{ckpt}", "--json", "{ckpt}", "--force"], "{ckpt}"),
    ("pretrain-dataset-file", [*PRETRAIN, "--out", "{data}/train-images-idx3-ubyte.gz", "--force"],
     "{data}/train-images-idx3-ubyte.gz"),
    ("pretrain-json-dataset-file", [*PRETRAIN, "--out", "{out}/m.pt", "--json", "{data}/t10k-labels-idx1-ubyte.gz",
                                    "--force"], "{data}/t10k-labels-idx1-ubyte.gz"),
    ("evaluate-checkpoint", ["evaluate", "{ckpt}", "--data", "{data}", "--out", "{ckpt}", "--force"], "{ckpt}"),
    ("evaluate-dataset-file", ["evaluate", "{ckpt}", "--data", "{data}", "--out", "{data}/t10k-images-idx3-ubyte.gz",
                               "--force"], "{data}/t10k-images-idx3-ubyte.gz"),
    ("export-checkpoint", ["export", "{ckpt}", "--out", "{ckpt}", "--force"], "{ckpt}"),
    ("predict-model", ["device", "predict", "{model}", "--data", "{data}", "--out", "{model}", "--force"], "{model}"),
    ("predict-dataset-file", ["device", "predict", "{model}", "--data", "{data}", "--out",
                              "{data}/t10k-labels-idx1-ubyte.gz", "--force"], "{data}/t10k-labels-idx1-ubyte.gz"),
    ("predict-images", ["device", "predict", "{model}", "--images", "{x}", "--out", "{x}", "--force"], "{x}"),
    ("predict-labels", ["device", "predict", "{model}", "--images", "{x}", "--image-labels", "{y}", "--out", "{y}",
                        "--force"], "{y}"),
    ("device-learn-state", [*DEVICE_LEARN, "--strategy", "ar1", "--out", "{out}", "--state", "{model}"], "{model}"),
    ("report-run", ["report", "{run}", "--out", "{run}"], "{run}/report.md"),
]


@pytest.mark.parametrize("argv, victim", [c[1:] for c in OWN_INPUT_CASES], ids=[c[0] for c in OWN_INPUT_CASES])
def test_no_command_overwrites_its_input(world, tmp_path, capsys, argv, victim):
    paths = world(tmp_path / "w", {f for s in argv + [victim] for _, f, _, _ in Formatter().parse(s) if f})
    argv, victim = [s.format(**paths) for s in argv], victim.format(**paths)
    before = _state(victim)
    assert before[0] == "file", f"{victim} should exist for this case"
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("bnncl: error: ") and err.count("\n") == 1, (code, err)
    assert "refusing to overwrite" in err or "would replace" in err, err
    assert _state(victim) == before, f"{victim} changed"
