"""Helper of tests/device/test_learner.py's kill test: run a device learner over a stream of experiences, resuming.

    python learner_worker.py MODEL STATE DATA.npz OPTIONS_JSON

DATA.npz holds ``images`` (E, N, H, W, C) uint8 and ``labels`` (E, N). The worker opens
``Learner.open(MODEL, STATE, options)`` (resuming from STATE when it exists), learns experiences
``learner.experiences .. E - 1`` (each ``learn`` saves the state atomically) and exits 0. Once the learner is open
(imports done, the state read, the frozen part's kernels and the learning step's loaded) it prints ``ready K`` (K:
experiences already in the state) and flushes, so the test can aim its SIGKILL at the learning and the saving, never
at the imports; after the last experience it prints ``done E`` (what remains is the interpreter's exit). Only the
device runtime is imported (no torch).
"""

import json
import sys

import numpy as np

from bnncl.core.options import LearnOptions
from bnncl.device import Learner, cruntime
from bnncl.device.kernels import imatmul


def main(model_path: str, state_path: str, data_path: str, options_json: str) -> int:
    with np.load(data_path) as data:
        images, labels = data["images"], data["labels"]
    cruntime.set_num_threads(1)  # the C kernels on one thread, as NUMBA_NUM_THREADS=1 puts numba's (the test sets it)
    learner = Learner.open(model_path, state_path, LearnOptions.from_dict(json.loads(options_json)))
    learner.latents(images[0, :1])  # load the frozen part's kernels now: the C library (changes no state)
    imatmul(np.ones((1, 1), np.int32), np.ones((1, 1), np.int32))  # and the step's: numba's, from its cache
    print("ready", learner.experiences, flush=True)
    for k in range(learner.experiences, len(images)):
        learner.learn(images[k], labels[k])
    print("done", learner.experiences, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
