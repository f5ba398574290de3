"""The peers' half of benchmarks/peers.py: TensorFlow Lite with XNNPack, onnxruntime and Larq Compute Engine, run in
the peers' own virtual environment (.venv-peers, TensorFlow 2.16 with the Keras 2 API: TF_USE_LEGACY_KERAS=1).

Not meant to be run by hand: benchmarks/peers.py starts it as ``python peers_worker.py DIR`` with DIR a temporary
directory holding ``spec.json`` (the architecture, the cases, what shapes to expect) and ``images.npy`` (uint8
images). It builds the architecture in Keras twice, with random weights (seed 0): the float twin (every binary conv a
float conv, no sign anywhere) and the binary network in larq (``QuantConv2D`` with ``ste_sign`` input and kernel
quantizers, +1 padding), each cut into the frozen part (everything below the latent-replay layer) and the whole
network, at each batch size. The float twin is converted for TFLite (``TFLiteConverter``) and for onnxruntime
(tf2onnx), the binary network with ``larq_compute_engine.convert_keras_model``; converted models are cached under
.venv-peers/model-cache (keyed by the spec, this file and the package versions). It writes ``setup.json`` (versions,
op counts, output shapes, agreement with Keras, the errors of the peers that could not be set up) and prints
``@@peers ready`` on its stdout; then each line on its stdin is a JSON command, ``{"cmd": "round", "case": ...,
"seconds": S, "out": NAME}`` (time every peer on one case for one round with common.compare, write DIR/NAME) or
``{"cmd": "quit"}``, answered by ``@@peers done NAME``. Everything else it prints goes to its stderr.
"""

import hashlib
import json
import os
import shutil
import sys
import time
import traceback
from collections import Counter
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # larq needs the Keras 2 API (tf_keras)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")  # keep TFLite's "Created TensorFlow Lite XNNPACK delegate" line

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import numpy as np  # noqa: E402

from common import compare  # noqa: E402

PREFIX = "@@peers"
PEERS = ("tflite", "onnxruntime", "lce", "lce_indirect")
PACKAGES = ("tensorflow-cpu", "tf-keras", "keras", "larq", "larq-compute-engine", "onnxruntime", "tf2onnx", "onnx",
            "numpy", "protobuf", "ml-dtypes", "flatbuffers")
SEED = 0


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".strip().rstrip(":")


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for p in PACKAGES:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = None
    return out


def normalize(x: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32 in [-1, 1]: bnncl's input map (bnncl.core.functional.normalize_images), timed with the
    peers as it is timed with bnncl."""
    return x.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


# -- the architecture in Keras ----------------------------------------------------------------------------------------

def keras_models(arch: dict, lr_layer: str, batch: int, binary: bool):
    """(frozen part, whole network) of the bnncl backbone ``arch`` (BackboneConfig.to_dict()) in Keras, sharing their
    layers, input batch fixed at ``batch``; ``binary``: larq's binary convs, else the float twin.

    Per layer, as bnncl.models.backbone / bnncl.layers build it: stem = conv 3x3 (no bias) + BN; block = shift ->
    binary conv 3x3 (+1 padding) -> BN -> + shortcut -> RPReLU (shift, PReLU one slope per channel, shift); the
    shortcut is the identity or 2x2 average pool (padding excluded from the average) + channels repeated; at the
    binary boundary a shift + sign (the ``binarize`` layer) feeds the block's conv as is and its shortcut through a
    per-channel scale; then global average pool and a bias-free dense head. bnncl's magnitude-aware weight scale
    (mean |W| per output channel) is a per-channel multiply before BN, which LCE folds like BN: the binary convs here
    use plain ste_sign kernels (LCE's supported form). The float twin drops every sign.
    """
    import tensorflow as tf

    if binary:
        import larq as lq
    keras = tf.keras
    init = keras.initializers

    class Shift(keras.layers.Layer):  # bnncl.layers.LearnableBias
        def build(self, shape):
            self.bias = self.add_weight(name="bias", shape=(shape[-1],), initializer=init.RandomNormal(0.0, 0.1))

        def call(self, x):
            return x + self.bias

    class Scale(keras.layers.Layer):  # bnncl.layers.LearnableScale
        def build(self, shape):
            self.scale = self.add_weight(name="scale", shape=(shape[-1],), initializer=init.RandomUniform(0.5, 1.5))

        def call(self, x):
            return x * self.scale

    def bn():  # random statistics, as benchmarks/inference.py's random checkpoint: nothing trivially degenerate
        return keras.layers.BatchNormalization(
            epsilon=1e-5, moving_mean_initializer=init.RandomNormal(0.0, 0.5),
            moving_variance_initializer=init.RandomUniform(0.5, 2.0), gamma_initializer=init.RandomUniform(0.5, 1.5),
            beta_initializer=init.RandomNormal(0.0, 0.1))

    def conv3x3(channels, stride):
        if binary:
            return lq.layers.QuantConv2D(channels, 3, strides=stride, padding="same", pad_values=1.0,
                                         input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                                         kernel_constraint="weight_clip", use_bias=False)
        return keras.layers.Conv2D(channels, 3, strides=stride, padding="same", use_bias=False)

    if arch.get("shortcut", "duplicate") != "duplicate":
        raise NotImplementedError(f"shortcut {arch['shortcut']!r}: only bnncl's 'duplicate' shortcut is built here")
    tf.keras.utils.set_random_seed(SEED)  # the same weights at every batch size
    h, w, c = arch["input_shape"]
    inp = keras.Input((h, w, c), batch_size=batch)
    x = keras.layers.Conv2D(arch["stem_channels"], 3, strides=arch["stem_stride"], padding="same", use_bias=False)(inp)
    x = bn()(x)
    before = {}  # layer name -> the tensor entering it
    cin, k = arch["stem_channels"], 0
    for channels, blocks, stride in arch["stages"]:
        for i in range(blocks):
            k += 1
            name, s = f"block{k}", stride if i == 0 else 1
            boundary = name == arch.get("binary_boundary")
            if boundary:
                before["binarize"] = x
                x = Shift()(x)
                if binary:
                    x = lq.quantizers.SteSign()(x)
            before[name] = x
            y = bn()(conv3x3(channels, s)(x if boundary else Shift()(x)))
            sc = Scale()(x) if boundary else x
            if s > 1:
                sc = keras.layers.AveragePooling2D(s, s, padding="same")(sc)
            if channels != cin:
                if channels % cin:
                    raise ValueError(f"{name}: {cin} -> {channels} channels cannot be duplicated")
                sc = keras.layers.Concatenate()([sc] * (channels // cin))
            x = keras.layers.Add()([y, sc])
            x = Shift()(keras.layers.PReLU(alpha_initializer=init.Constant(0.25), shared_axes=[1, 2])(Shift()(x)))
            cin = channels
    before["pool"] = x
    x = keras.layers.GlobalAveragePooling2D()(x)
    before["head"] = x
    logits = keras.layers.Dense(arch["num_classes"], use_bias=False)(x)
    if lr_layer not in before:
        raise ValueError(f"cannot cut the Keras model before {lr_layer!r}")
    return keras.Model(inp, before[lr_layer]), keras.Model(inp, logits)


# -- op counts of converted models --------------------------------------------------------------------------------

def tflite_ops(buf: bytes) -> dict:
    """Operator counts of a TFLite flatbuffer (builtin names, LCE's custom op names)."""
    from larq_compute_engine.mlir.python import tflite_schema as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(buf, 0))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    counts = Counter()
    for op in model.subgraphs[0].operators:
        code = model.operatorCodes[op.opcodeIndex]
        counts[code.customCode.decode() if code.customCode
               else names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")] += 1
    return dict(counts.most_common())


def onnx_ops(buf: bytes) -> dict:
    import onnx

    return dict(Counter(n.op_type for n in onnx.load_from_string(buf).graph.node).most_common())


# -- conversion (cached) ------------------------------------------------------------------------------------------

def convert_all(spec: dict, cache: Path, log) -> tuple[dict, dict, dict]:
    """{(kind, part, batch): bytes} for kind in tflite/onnx/lce, Keras's own outputs on the images (the reference the
    converted models are checked against), and the errors per kind. Cached in ``cache``."""
    models, refs, errors = {}, {}, {}
    images = np.load(spec["images"])
    index_file = cache / "index.json"
    if index_file.is_file():
        index = json.loads(index_file.read_text())
        for key in index["models"]:
            kind, part, batch = key.split("/")
            models[(kind, part, int(batch))] = (cache / key.replace("/", "_")).read_bytes()
        for key in index["refs"]:
            kind, part, batch = key.split("/")
            refs[(kind, part, int(batch))] = np.load(cache / f"ref_{kind}_{part}_{batch}.npy")
        log(f"converted models from the cache {cache}")
        return models, refs, index["errors"]
    import tensorflow as tf

    for kind, binary in (("float", False), ("binary", True)):
        for batch in spec["batches"]:
            t0 = time.perf_counter()
            try:
                frozen, whole = keras_models(spec["architecture"], spec["lr_layer"], batch, binary)
            except Exception as e:  # noqa: BLE001 - a peer that cannot be built is reported, the others run
                for k in (("tflite", "onnx") if kind == "float" else ("lce",)):
                    errors.setdefault(k, f"building the Keras model: {one_line(e)}")
                log(traceback.format_exc())
                continue
            for part, model in (("frozen", frozen), ("whole", whole)):
                x = normalize(images[:batch])
                refs[(kind, part, batch)] = model(x, training=False).numpy()
                if binary:
                    targets = {"lce": lambda m=model: lce_convert(m)}
                else:
                    targets = {"tflite": lambda m=model: tf.lite.TFLiteConverter.from_keras_model(m).convert(),
                               "onnx": lambda m=model, b=batch: onnx_convert(m, b)}
                for k, fn in targets.items():
                    if k in errors:
                        continue
                    try:
                        models[(k, part, batch)] = fn()
                    except Exception as e:  # noqa: BLE001
                        errors[k] = f"converting: {one_line(e)}"
                        log(traceback.format_exc())
            log(f"built and converted the {kind} models at batch {batch} in {time.perf_counter() - t0:.1f} s")
    if cache.parent.is_dir():  # models of older specs, worker sources or versions: never read again
        for old in cache.parent.iterdir():
            if old.is_dir() and old != cache:
                shutil.rmtree(old, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    for (k, part, batch), buf in models.items():
        (cache / f"{k}_{part}_{batch}").write_bytes(buf)
    for (k, part, batch), ref in refs.items():
        np.save(cache / f"ref_{k}_{part}_{batch}.npy", ref)
    if not errors:  # a failed conversion is retried next time, not cached
        index_file.write_text(json.dumps({"models": [f"{k}/{p}/{b}" for k, p, b in models],
                                          "refs": [f"{k}/{p}/{b}" for k, p, b in refs], "errors": errors}))
    return models, refs, errors


def lce_convert(model) -> bytes:
    import warnings

    import larq_compute_engine as lce

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lce.convert_keras_model(model)


def onnx_convert(model, batch: int) -> bytes:
    import tensorflow as tf
    import tf2onnx

    h, w, c = model.input_shape[1:]
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=(tf.TensorSpec((batch, h, w, c), tf.float32,
                                                                                name="x"),), opset=17)
    return proto.SerializeToString()


# -- the runners ---------------------------------------------------------------------------------------------------

def make_tflite(buf: bytes, threads: int):
    """TFLite's own interpreter (tf.lite.Interpreter) with its default delegate, XNNPack, and ``threads`` threads; also
    whether XNNPack took the whole graph (one DELEGATE node from the model's input to its output)."""
    import tensorflow as tf

    it = tf.lite.Interpreter(model_content=buf, num_threads=threads)
    it.allocate_tensors()
    i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    nodes = it._get_ops_details()  # the delegate's node is appended to the model's own nodes
    delegates = [d for d in nodes if d["op_name"] == "DELEGATE"]
    whole = (len(delegates) == 1 and i in list(delegates[0]["inputs"]) and o in list(delegates[0]["outputs"]))
    info = {"delegate_nodes": len(delegates), "xnnpack_whole_graph": bool(whole)}

    def run(x):
        it.set_tensor(i, normalize(x))
        it.invoke()
        return it.get_tensor(o)

    return run, info


def make_onnxruntime(buf: bytes, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(buf, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def run(x):
        return sess.run(None, {name: normalize(x)})[0]

    return run, {"providers": sess.get_providers()}


def make_lce(buf: bytes, threads: int, indirect: bool):
    """LCE's own interpreter (its build of TFLite with the LCE ops registered), as documented: default options, or
    ``use_indirect_bgemm`` (its XNNPack-derived indirect BGEMM binary conv). Called through the wrapper's batch
    ``predict([x])``: the documented ``Interpreter.predict`` runs one image at a time."""
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    it = Interpreter(buf, num_threads=threads, use_indirect_bgemm=indirect)

    def run(x):
        return it.interpreter.predict([normalize(x)])[0]

    return run, {"use_indirect_bgemm": indirect, "use_xnnpack": False, "use_reference_bconv": False}


def setup(spec: dict, log) -> tuple[dict, dict]:
    """The runners {(peer, part, batch, threads): fn} and setup.json's content."""
    info = {"versions": versions(), "errors": {}, "ops": {}, "shapes": {}, "agreement": {}, "runners": {}}
    images = np.load(spec["images"])
    key = hashlib.sha256(json.dumps({k: spec[k] for k in ("architecture", "lr_layer", "batches")}, sort_keys=True)
                         .encode() + Path(__file__).read_bytes() + json.dumps(info["versions"]).encode()).hexdigest()
    cache = Path(spec["cache"]) / key[:16]
    t0 = time.perf_counter()
    try:
        import tensorflow as tf  # noqa: F401 - every peer needs it (Keras, the converters, TFLite's interpreter)
    except Exception as e:  # noqa: BLE001
        for p in PEERS:
            info["errors"][p] = f"importing tensorflow: {one_line(e)}"
        return {}, info
    info["import_seconds"] = time.perf_counter() - t0
    models, refs, conv_errors = convert_all(spec, cache, log)
    info["convert_seconds"] = time.perf_counter() - t0 - info["import_seconds"]
    info["cache"] = str(cache)
    peer_kind = {"tflite": "tflite", "onnxruntime": "onnx", "lce": "lce", "lce_indirect": "lce"}
    ref_kind = {"tflite": "float", "onnx": "float", "lce": "binary"}
    for p in PEERS:
        if peer_kind[p] in conv_errors:
            info["errors"][p] = conv_errors[peer_kind[p]]
    for (kind, part, batch), buf in models.items():
        try:
            ops = tflite_ops(buf) if kind != "onnx" else onnx_ops(buf)
        except Exception as e:  # noqa: BLE001 - counting ops needs LCE's schema module (or onnx): only informative
            ops = {"error": one_line(e)}
        info["ops"].setdefault(kind, {})[f"{part}/{batch}"] = ops
    runners = {}
    for p in PEERS:
        if p in info["errors"]:
            continue
        kind = peer_kind[p]
        try:
            for part in ("frozen", "whole"):
                for batch in spec["batches"]:
                    for threads in spec["threads"]:
                        buf = models[(kind, part, batch)]
                        if p == "tflite":
                            fn, extra = make_tflite(buf, threads)
                        elif p == "onnxruntime":
                            fn, extra = make_onnxruntime(buf, threads)
                        else:
                            fn, extra = make_lce(buf, threads, p == "lce_indirect")
                        out = fn(images[:batch])
                        want = [batch, *spec["expect"][part]]
                        info["shapes"][f"{p}/{part}/{batch}/{threads}"] = list(out.shape)
                        if list(out.shape) != want:
                            raise ValueError(f"{part} at batch {batch}: output shape {list(out.shape)}, "
                                             f"expected {want}")
                        ref = refs[(ref_kind[kind], part, batch)]
                        agree = {"max_abs_vs_keras": float(np.abs(out - ref).max())}
                        if part == "whole":
                            agree["argmax_agreement_vs_keras"] = float((out.argmax(1) == ref.argmax(1)).mean())
                        info["agreement"][f"{p}/{part}/{batch}/{threads}"] = agree
                        info["runners"][f"{p}/{part}/{batch}/{threads}"] = extra
                        runners[(p, part, batch, threads)] = fn
        except Exception as e:  # noqa: BLE001
            info["errors"][p] = one_line(e)
            log(traceback.format_exc())
            runners = {k: v for k, v in runners.items() if k[0] != p}
    return runners, info


def main():
    tmp = Path(sys.argv[1])
    proto = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol's own stdout; anything else printed goes to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def log(msg):
        print(f"[peers_worker] {msg}", file=sys.stderr, flush=True)

    spec = json.loads((tmp / "spec.json").read_text())
    images = np.load(spec["images"])
    try:
        runners, info = setup(spec, log)
    except Exception as e:  # noqa: BLE001 - whatever broke, the main process reports it and goes on
        log(traceback.format_exc())
        runners, info = {}, {"versions": versions(), "errors": {p: one_line(e) for p in PEERS}}
    (tmp / "setup.json").write_text(json.dumps(info, indent=1))
    print(f"{PREFIX} ready", file=proto, flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        part, batch, threads = cmd["case"]["part"], cmd["case"]["batch"], cmd["case"]["threads"]
        x = images[:batch]
        fns = {p: (lambda fn=fn: fn(x)) for (p, pt, b, t), fn in runners.items()
               if (pt, b, t) == (part, batch, threads)}
        res = {}
        for p, fn in fns.items():  # one at a time: a peer that fails while timed is reported, the others go on
            try:
                res.update(compare({p: fn}, cmd["seconds"], 1))
            except Exception as e:  # noqa: BLE001
                log(traceback.format_exc())
                res[p] = {"error": one_line(e)}
                runners = {k: v for k, v in runners.items() if k[0] != p}
        (tmp / cmd["out"]).write_text(json.dumps(res))
        print(f"{PREFIX} done {cmd['out']}", file=proto, flush=True)


if __name__ == "__main__":
    main()
