"""keras_zoo.quantization: the QAT plan, calibration, round trips, integer export, pruning."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_zoo
from export import export_tflite, tflite, verify
from export.report import randomise_weights, train_classifier
from keras_zoo import quantization
from keras_zoo.data import datasets
from keras_zoo.models.base import ZooModel
from keras_zoo.presets import register_family

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def digits():
    x, y, _ = datasets.load_arrays("digits", "train", 32, 1)
    xt, yt, _ = datasets.load_arrays("digits", "test", 32, 1)
    return x, y, xt, yt


@pytest.fixture(scope="module")
def trained_lenet(digits):
    keras.utils.set_random_seed(0)
    model = keras_zoo.from_preset("lenet5_relu")
    train_classifier(model, 3, 3e-3)
    return model


def _plans(model):
    return {p.path: (layer, p) for layer, p in vars(model)["_qat_plan"].layers.values()}


def test_vit_plan_quantizes_projections_keeps_norms_float(digits):
    qat = quantization.quantize_aware(keras_zoo.from_preset("vit_tiny_digits"),
                                      calibration_data=digits[0][:64])
    plans = _plans(qat)
    compute = sorted(path for path, (_, p) in plans.items() if p.role == "compute")
    assert compute == sorted(
        ["head", "patch_embedding/projection"]
        + [f"encoder_block_{i}/{name}" for i in range(2)
           for name in ("attention/qkv", "attention/out", "mlp/fc1", "mlp/fc2")])
    for i in range(2):
        block = f"encoder_block_{i}"
        # LayerNorm: float inside, quantized output (the int8 qkv/fc1 read it).
        for norm in ("attention_norm", "mlp_norm"):
            _, p = plans[f"{block}/{norm}"]
            assert p.role == "float" and not p.inputs and p.outputs
        # qkv reads the norm's quantized output: no second quantizer on its input.
        assert not plans[f"{block}/attention/qkv"][1].inputs
        # out and fc2 read float code (attention context, GELU): quantized on entry.
        assert plans[f"{block}/attention/out"][1].inputs
        assert plans[f"{block}/mlp/fc2"][1].inputs
        assert plans[block][1].outputs  # the residual stream between blocks
    # The model input is quantized once, where it enters the patch embedding.
    assert list(plans["patch_embedding"][1].inputs) == [("a", 0, 0)]
    assert not plans["patch_embedding/projection"][1].inputs


def test_resnet_folds_every_batchnorm_and_fuses_relu(digits):
    qat = quantization.quantize_aware(keras_zoo.from_preset("resnet_tiny_digits"),
                                      calibration_data=digits[0][:64])
    plans = _plans(qat)
    convs = [(path, p) for path, (_, p) in plans.items() if p.role == "compute" and path != "head"]
    assert len(convs) == 1 + 4 * 2 + 3  # stem, two per block, three projection shortcuts
    for path, p in convs:
        assert p.fold is not None and not p.outputs, path  # BatchNorm folded, no quantizer between
        assert p.weights == "per_channel"
    # stem conv -> BN -> ReLU layer: one quantizer, after the ReLU.
    assert not plans["stem_bn"][1].outputs and plans["stem_relu"][1].outputs
    # Folded inference equals the float model's conv -> BN (quantization off).
    float_model = keras_zoo.from_preset("resnet_tiny_digits")
    randomise_weights(float_model)
    qat = quantization.quantize_aware(float_model, calibration_data=digits[0][:64])
    with quantization.mode(qat, "float"):
        folded = np.asarray(qat(digits[0][:8]))
    np.testing.assert_allclose(folded, np.asarray(float_model(digits[0][:8])), rtol=1e-4,
                               atol=1e-4)


def test_calibrated_model_stays_close_to_the_float_model(trained_lenet, digits):
    x = digits[2]
    qat = quantization.quantize_aware(trained_lenet, calibration_data=digits[0][:512])
    ranges = quantization.get_state(qat).ranges()
    assert ranges and all(hi > lo for lo, hi in ranges.values())  # calibrated, not zero
    assert all(hi > 0.1 for _, hi in ranges.values())
    reference = np.asarray(trained_lenet.predict(x, verbose=0))
    fake_quantized = np.asarray(qat.predict(x, verbose=0))
    scale = np.abs(reference).max()
    assert np.abs(fake_quantized - reference).max() / scale < 0.05
    assert np.mean(fake_quantized.argmax(1) == reference.argmax(1)) >= 0.98
    # The original is untouched, and fake quantization does change the numbers.
    assert not quantization.is_quantize_aware(trained_lenet)
    assert np.abs(fake_quantized - reference).max() > 1e-4


def test_round_trip_through_keras_file_and_preset(trained_lenet, digits, tmp_path):
    qat = quantization.quantize_aware(trained_lenet, {"ranges": "learned"},
                                      calibration_data=digits[0][:256])
    x = digits[2][:32]
    expected = np.asarray(qat(x))
    path = str(tmp_path / "qat.keras")
    qat.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(qat) and quantization.is_quantize_aware(loaded)
    assert loaded.get_zoo_config()["qat"]["ranges"] == "learned"
    assert quantization.get_state(loaded).ranges() == quantization.get_state(qat).ranges()
    np.testing.assert_allclose(np.asarray(loaded(x)), expected, atol=1e-6)

    qat.save_to_preset(str(tmp_path / "preset"))
    with open(tmp_path / "preset" / "config.json") as f:
        config = json.load(f)  # plain JSON: the wrapper is data
    assert config["family"] == "LeNet" and config["config"]["qat"]["weights"] == "per_channel"
    restored = keras_zoo.from_preset(str(tmp_path / "preset"))
    assert quantization.get_state(restored).ranges() == quantization.get_state(qat).ranges()
    np.testing.assert_allclose(np.asarray(restored(x)), expected, atol=1e-6)


def test_unsupported_layer_raises_naming_it():
    model = keras_zoo.from_preset("conv_autoencoder_digits")
    with pytest.raises(quantization.QuantizationError,
                       match=r"cannot quantize layer '[^']*decoder[^']*' \(Conv2DTranspose\).*"
                             r"skip_layers"):
        quantization.quantize_aware(model)


def test_config_errors_name_the_option():
    with pytest.raises(quantization.QuantizationError, match="did you mean 'momentum'"):
        quantization.resolve({"momentun": 0.9})
    with pytest.raises(quantization.QuantizationError, match="num_bits=4"):
        quantization.resolve({"num_bits": 4})
    with pytest.raises(quantization.QuantizationError, match="batchnorm='keep'"):
        quantization.resolve({"batchnorm": "keep"})
    with pytest.raises(quantization.QuantizationError, match="not a keras_zoo|ZooModel"):
        quantization.quantize_aware(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))


def test_int8_export_needs_no_representative_data(trained_lenet, digits, tmp_path):
    x, _, xt, _ = digits
    qat = quantization.quantize_aware(trained_lenet, calibration_data=x[:512])
    path = str(tmp_path / "lenet_qat.tflite")
    # The classifier's own signature (the file would also carry the embedding one),
    # without MediaPipe's metadata: its RGB -> grey input layer is not QAT's graph.
    result = export_tflite(qat, {"int8": path}, signature="serving_default",
                           metadata="none")["int8"]
    with open(path, "rb") as f:
        content = f.read()
    ops = tflite.op_precisions(content)
    assert ops["CONV_2D"] == {"int8": 2} and ops["FULLY_CONNECTED"] == {"int8": 3}
    assert set(ops) == {"CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "RESHAPE", "QUANTIZE",
                        "DEQUANTIZE"}
    # Dense kernels are per output channel: the converter quantized the float
    # weights itself, as the training graph simulated.
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    units = {t["shape"][0]: len(t["quantization_parameters"]["scales"])
             for t in interpreter.get_tensor_details()
             if t["dtype"] == np.int8 and len(t["shape"]) == 2 and t["shape"][0] in (120, 84)}
    assert units == {120: 120, 84: 84}
    outputs = verify.tflite_outputs(path, "serving_default", {"images": xt})
    logits = next(iter(outputs.values()))
    keras_logits = np.asarray(qat.predict(xt, verbose=0))
    assert np.mean(logits.argmax(1) == keras_logits.argmax(1)) >= 0.99
    assert np.abs(logits - keras_logits).max() < 0.05 * np.abs(keras_logits).max()
    assert result["quantization"] == "int8"
    bench = verify.benchmark(path, runs=3)
    assert bench["fully_delegated"]


def test_vit_int8_export_keeps_gelu_and_norms_float_and_is_delegated(digits, tmp_path):
    model = randomise_weights(keras_zoo.from_preset("vit_tiny_digits"))
    qat = quantization.quantize_aware(model, calibration_data=digits[0][:128])
    path = str(tmp_path / "vit_qat.tflite")
    export_tflite(qat, {"int8": path}, signature="serving_default")
    with open(path, "rb") as f:
        ops = tflite.op_precisions(f.read())
    assert ops["FULLY_CONNECTED"] == {"int8": 9} and ops["CONV_2D"] == {"int8": 1}
    assert ops["GELU"] == {"float32": 2} and ops["SOFTMAX"] == {"float32": 2}
    assert ops["RSQRT"] == {"float32": 5} and "int8" not in ops["MEAN"]
    assert verify.benchmark(path, runs=3)["fully_delegated"]
    logits = next(iter(verify.tflite_outputs(path, "serving_default",
                                             {"images": digits[2][:64]}).values()))
    keras_logits = np.asarray(qat.predict(digits[2][:64], verbose=0))
    assert np.mean(logits.argmax(1) == keras_logits.argmax(1)) >= 0.9


@register_family
@keras.saving.register_keras_serializable(package="keras_zoo_tests")
class _TokenClassifier(ZooModel):
    """Token ids -> Embedding -> Keras MultiHeadAttention (EinsumDense
    projections) -> mean -> Dense: the shape of a BERT-style classifier."""

    def __init__(self, vocab=50, length=12, dim=16, heads=2, num_classes=3, name="tokens",
                 **kwargs):
        ids = keras.Input((length,), dtype="int32", name="ids")
        x = keras.layers.Embedding(vocab, dim, name="embed")(ids)
        x = keras.layers.MultiHeadAttention(heads, dim // heads, name="mha")(x, x)
        x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
        out = keras.layers.Dense(num_classes, name="head")(x)
        super().__init__(inputs=ids, outputs=out, name=name, **kwargs)


def test_einsum_attention_and_embedding_work_generically(tmp_path):
    model = randomise_weights(_TokenClassifier(), scale=0.3)
    ids = np.random.default_rng(0).integers(0, 50, (64, 12)).astype("int32")
    qat = quantization.quantize_aware(model, calibration_data=ids)
    plans = _plans(qat)
    for name in ("query", "key", "value", "attention_output"):
        assert plans[f"mha/{name}"][1].role == "compute"
        assert plans[f"mha/{name}"][1].weights == "per_tensor"  # EinsumDense
    assert plans["embed"][1].outputs  # the gathered rows are int8
    path = str(tmp_path / "tokens.tflite")
    export_tflite(qat, {"int8": path})
    with open(path, "rb") as f:
        ops = tflite.op_precisions(f.read())
    assert ops["FULLY_CONNECTED"].get("int8", 0) >= 4
    logits = next(iter(verify.tflite_outputs(path, "serving_default", {"ids": ids}).values()))
    keras_logits = np.asarray(qat(ids))
    assert np.abs(logits - keras_logits).max() < 0.1 * np.abs(keras_logits).max()


def test_pruning_schedule_masks_and_exported_zeros(trained_lenet, digits, tmp_path):
    prune = quantization.resolve({"prune": {"sparsity": 0.6, "begin_step": 10,
                                            "end_step": 110}})["prune"]
    from keras_zoo.quantization.pruning import target_sparsity

    assert target_sparsity(0, prune) == 0.0 and target_sparsity(10, prune) == 0.0
    assert target_sparsity(110, prune) == pytest.approx(0.6)
    assert 0.5 < target_sparsity(60, prune) < 0.6  # cubic: most of the pruning early
    qat = quantization.quantize_aware(trained_lenet, {"prune": 0.5},
                                      calibration_data=digits[0][:256])
    assert quantization.sparsity_of(qat) == 0.0
    reached = quantization.update_masks(qat, 0.5)
    assert reached == pytest.approx(0.5, abs=0.01)
    path = str(tmp_path / "pruned.tflite")
    export_tflite(qat, {"int8": path}, signature="serving_default")  # weights counted once
    with open(path, "rb") as f:
        sparsity = tflite.weight_sparsity(f.read())
    assert sparsity["kernel_weights"] == sum(
        int(np.prod(w.shape)) for w in qat.weights if w.path.endswith("kernel"))
    assert sparsity["zero_fraction"] >= 0.49


_MIRRORED = textwrap.dedent("""
    import sys
    import numpy as np
    from keras_zoo import distribute
    distribute.split_cpu(2)
    from experiments.train import train
    from keras_zoo import quantization
    result = train(dict(preset="lenet5_relu", qat=True, prune_sparsity=0.3, dataset="digits",
                        train_steps=8, eval_every=4, global_batch_size=32, learning_rate=1e-3,
                        warmup_steps=0, eval_dataset="none", strategy="mirrored",
                        jit_compile=False, model_dir=sys.argv[1]))
    model = result["model"]
    state = quantization.get_state(model)
    ranges = np.array(list(state.ranges().values()))
    import keras_zoo
    saved = keras_zoo.from_preset(sys.argv[1] + "/last")
    same = all(np.array_equal(a, b) for a, b in zip(model.get_weights(), saved.get_weights()))
    print("RESULT", result["replicas"], float(np.isfinite(ranges).all()),
          float((ranges[:, 1] > ranges[:, 0]).all()), quantization.sparsity_of(model),
          quantization.is_quantize_aware(saved), same)
""")


@pytest.mark.slow
def test_qat_trains_under_mirrored_strategy_on_two_cpus(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", _MIRRORED, str(tmp_path)], check=False,
                         env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT")]
    assert line, out.stdout[-2000:] + out.stderr[-3000:]
    _, replicas, finite, ordered, sparsity, is_qat, same = line[0].split()
    assert int(replicas) == 2
    assert float(finite) == 1.0 and float(ordered) == 1.0
    assert float(sparsity) > 0.2  # the pruning callback ran under the strategy
    assert is_qat == "True" and same == "True"  # the run's preset is the QAT model


def test_trainer_flags_are_checked_and_a_qat_model_is_kept(digits):
    from experiments import train as trainer

    with pytest.raises(trainer.TrainError, match="prune_sparsity must be in"):
        trainer.resolve({"preset": "lenet5_relu", "epochs": 1, "model_dir": "/tmp/x",
                         "prune_sparsity": 1.5})
    config = trainer.resolve({"preset": "lenet5_relu", "epochs": 1, "model_dir": "/tmp/x",
                              "qat": True, "qat_config": "momentum=0.9,weights=per_tensor"})
    assert config["qat_config"] == {"momentum": 0.9, "weights": "per_tensor"}
    qat, callbacks = quantization.for_training(
        keras_zoo.from_preset("lenet5_relu"), config["qat_config"], None, digits[0][:64])
    assert quantization.get_state(qat).qat_config["weights"] == "per_tensor" and not callbacks
    # Fine-tuning a QAT preset again keeps it (ranges and all) ...
    again, _ = quantization.for_training(qat, {}, None, digits[0][:64])
    assert again is qat
    # ... but cannot silently change how it quantizes.
    with pytest.raises(quantization.QuantizationError, match=r"already quantize-aware.*weights"):
        quantization.for_training(qat, {"weights": "per_channel"})


def test_distillation_fits_the_float_models_predictions(trained_lenet, digits):
    x, y = digits[0][:64], digits[1][:64]
    qat, _ = quantization.for_training(trained_lenet, {"distill": True}, None, x)
    teacher = np.asarray(trained_lenet(x))
    student = qat(x)
    soft = np.exp(teacher - teacher.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    log_student = np.asarray(keras.ops.log_softmax(student))
    expected = float(np.mean(-np.sum(soft * log_student, axis=1)))
    assert float(qat.compute_loss(x, y, student)) == pytest.approx(expected, rel=1e-4)
    qat.compile(optimizer=keras.optimizers.Adam(1e-4), **qat.compile_defaults())
    history = qat.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    with pytest.raises(quantization.QuantizationError, match="distill needs a classifier"):
        quantization.for_training(keras_zoo.from_preset("autoencoder_digits"),
                                  {"distill": True}, None, x)
