"""experiments/embed.py: embeddings, TensorBoard projector files, map, transfer scores."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest

import keras_zoo
from experiments import embed as tool
from keras_zoo.data import load_arrays

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
                PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _cli(*flags, timeout=300):
    return subprocess.run([sys.executable, "-m", "experiments.embed", *flags], cwd=REPO,
                          env=_env(), capture_output=True, text=True, timeout=timeout,
                          check=False)


def _png(path):
    import tensorflow as tf

    return tf.io.decode_png(open(path, "rb").read()).numpy()


def test_the_tool_writes_embeddings_projector_files_map_and_scores(tmp_path, capsys):
    model = keras_zoo.from_preset("lenet5")
    out = tmp_path / "emb"
    summary = tool.embed(model=model, dataset="digits:test", output=str(out), num_points=40,
                         train_points=300, labels_per_class=["5", "all"], seeds=2,
                         probe_epochs=3, progress=False)
    x, y, _ = load_arrays("digits", "test", 32, 1)
    z = np.load(out / "embeddings.npy")
    np.testing.assert_allclose(z, model.embed(x[:40]), atol=1e-5)  # dataset order
    assert z.shape == (40, 84) and summary["dim"] == 84 and summary["kind"] == "penultimate"
    np.testing.assert_array_equal(np.load(out / "labels.npy"), y[:40])
    np.testing.assert_allclose(np.loadtxt(out / "tensors.tsv", delimiter="\t"), z, rtol=1e-6,
                               atol=1e-7)
    assert (out / "metadata.tsv").read_text().split() == [str(v) for v in y[:40]]
    assert _png(out / "sprite.png").shape == (7 * 32, 7 * 32, 1)  # ceil(sqrt(40)) = 7
    config = (out / "projector_config.pbtxt").read_text()
    for field in ('tensor_path: "tensors.tsv"', 'metadata_path: "metadata.tsv"',
                  'image_path: "sprite.png"', "single_image_dim: 32"):
        assert field in config
    map_png = _png(out / "map.png")
    assert map_png.shape[1] > 1.5 * map_png.shape[0]  # two panels side by side
    assert os.path.getsize(out / "map.png") < 200_000
    scores = json.loads((out / "scores.json").read_text())["scores"]
    assert list(scores) == ["LeNet penultimate", "raw inputs", "PCA-84 of raw inputs"]
    assert scores["raw inputs"]["dim"] == 1024 and scores["PCA-84 of raw inputs"]["dim"] == 84
    few, full = scores["raw inputs"]["settings"]["5/class"], scores["raw inputs"]["settings"]["all"]
    assert few["train_points"] == 50 and len(few["knn"]) == 2  # 5 labels x 10 classes, 2 draws
    assert full["train_points"] == 300 and len(full["knn"]) == 1
    assert full["knn"][0] > 0.8  # k-NN on digit pixels: a real score, not a placeholder
    printed = capsys.readouterr().out
    assert "k-NN 5/class" in printed and "probe all" in printed and "PCA-84 of raw" in printed


def test_the_sprite_has_one_tile_per_point_in_order(tmp_path):
    images = np.random.default_rng(0).random((11, 32, 32, 1)).astype("float32")
    sprite = tool.sprite_image(images, 32)
    assert sprite.shape == (4 * 32, 4 * 32, 1)  # 11 points -> a 4 x 4 grid
    for i in range(16):
        row, col = divmod(i, 4)
        tile = sprite[row * 32:(row + 1) * 32, col * 32:(col + 1) * 32]
        expected = np.round(images[i] * 255).astype("uint8") if i < 11 else 0
        np.testing.assert_array_equal(tile, expected, err_msg=f"tile {i}")
    small = tool.sprite_image(images, 16)  # 2x2 area averages
    mean = images[5].reshape(16, 2, 16, 2, 1).mean(axis=(1, 3))
    np.testing.assert_allclose(small[16:32, 16:32].astype(float), mean * 255, atol=0.51)
    # Through the tool: the written sprite.png holds the dataset's images in order.
    x, y = images[:9], np.arange(9)
    np.savez(tmp_path / "points.npz", x=x, y=y)
    tool.embed(model=keras_zoo.from_preset("lenet5"), dataset=str(tmp_path / "points.npz"),
               output=str(tmp_path / "out"), map="none", progress=False)
    written = _png(tmp_path / "out" / "sprite.png")
    assert written.shape == (96, 96, 1)
    np.testing.assert_array_equal(written[32:64, 64:96], np.round(x[5] * 255))  # row 1, col 2


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def test_tensorboard_projector_lists_the_written_embedding(tmp_path):
    out = tmp_path / "emb"
    written = _cli("--preset=vit_tiny_digits", "--dataset=digits:test", f"--output={out}",
                   "--num_points=30", "--train_dataset=none", "--map=pca", "--kind=mean")
    assert written.returncode == 0, written.stderr[-2000:]
    port = _free_port()
    board = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", f"--logdir={out}", "--host=127.0.0.1",
         f"--port={port}", "--load_fast=false"],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}/data/plugin/projector"
    try:
        deadline, runs = time.time() + 180, None
        while time.time() < deadline and board.poll() is None:
            try:
                runs = json.loads(_get(f"{base}/runs"))
                if runs:
                    break
            except OSError:
                pass
            time.sleep(1)
        assert board.poll() is None, board.stderr.read().decode()[-2000:]
        assert runs == ["."], runs  # the logdir itself holds the projector config
        config = json.loads(_get(f"{base}/info?run=."))
        [embedding] = config["embeddings"]
        assert embedding["tensorShape"] == [30, 64]  # read by TensorBoard from tensors.tsv
        assert embedding["tensorName"].startswith("ViT vit_tiny_digits (mean, 64-d)")
        assert embedding["metadataPath"] == "metadata.tsv"
        assert embedding["sprite"]["singleImageDim"] == [32, 32]
        name = urllib.parse.quote(embedding["tensorName"])
        sprite = _get(f"{base}/sprite_image?run=.&name={name}")
        assert sprite == (out / "sprite.png").read_bytes()
        tensor = np.frombuffer(_get(f"{base}/tensor?run=.&name={name}"), "<f4")
        np.testing.assert_allclose(tensor.reshape(30, 64), np.load(out / "embeddings.npy"),
                                   rtol=1e-6, atol=1e-6)
    finally:
        board.terminate()
        try:
            board.wait(timeout=20)
        except subprocess.TimeoutExpired:
            board.kill()
            board.wait(timeout=20)


@pytest.mark.parametrize("preset", ["lenet5", "vae_digits", "mae_tiny_digits",
                                    "dino_vit_tiny_digits"])
def test_keras_saved_model_and_tflite_embeddings_agree(tmp_path, preset):
    from export import verify
    from export.export import export_model

    rng = np.random.default_rng(0)
    model = keras_zoo.from_preset(preset)
    for w in model.weights:  # non-trivial weights: parity of real arithmetic
        w.assign(rng.normal(0.0, 0.2, w.shape).astype(w.dtype))
    x = load_arrays("digits", "test", 32, 1)[0][:8]
    reference = model.embed(x)
    saved = export_model(model, str(tmp_path / "sm"), format="saved_model")
    assert "embedding" in saved["signatures"]
    assert saved["signatures"]["embedding"]["outputs"] == ["embedding"]
    lite = export_model(model, str(tmp_path / "m.tflite"), signature="embedding")
    from_saved = verify.saved_model_outputs(saved["path"], "embedding", {"images": x})
    from_lite = verify.tflite_outputs(lite["path"], "embedding", {"images": x})
    np.testing.assert_allclose(from_saved["embedding"], reference, atol=1e-4, rtol=0)
    np.testing.assert_allclose(from_lite["embedding"], reference, atol=1e-4, rtol=0)


def test_a_dataset_that_does_not_fit_the_model_is_one_line(tmp_path):
    np.savez(tmp_path / "mnist_like.npz", x=np.zeros((5, 28, 28, 1), "float32"),
             y=np.zeros(5, "int64"))
    with pytest.raises(tool.EmbedError) as info:
        tool.embed(preset="lenet5", dataset=str(tmp_path / "mnist_like.npz"),
                   output=str(tmp_path / "out"), progress=False)
    assert str(info.value) == (f"dataset {str(tmp_path / 'mnist_like.npz')!r} holds inputs "
                               "of shape (5, 28, 28, 1); the model takes (N, 32, 32, 1)")
    assert not (tmp_path / "out").exists()  # nothing written


def test_more_points_than_the_sprite_holds_is_one_line_before_any_work(tmp_path):
    # 2048 px tiles: the projector's 8192 px sprite holds a 4 x 4 grid.
    with pytest.raises(tool.EmbedError) as info:
        tool.embed(preset="lenet5", dataset="digits:test", output=str(tmp_path / "out"),
                   num_points=17, sprite_tile=2048, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("17 points need a 10,240 x 10,240 px sprite of 2048 px tiles, "
                              "but TensorBoard's projector loads sprites up to 8192 x 8192 px "
                              "(16 points at this tile size)")
    assert "--num_points<=16" in message and "--nosprite" in message
    assert tool.sprite_capacity(32) == 65_536  # the documented default cap
    summary = tool.embed(preset="lenet5", dataset="digits:test", output=str(tmp_path / "out"),
                         num_points=17, sprite=False, map="none", train_dataset="none",
                         progress=False)
    assert "sprite.png" not in summary["files"] and summary["num_points"] == 17


def test_an_output_folder_that_is_a_file_is_one_line_from_the_command_line(tmp_path):
    existing = tmp_path / "taken"
    existing.write_text("not a folder")
    result = _cli("--preset=lenet5", f"--output={existing}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == (f"error: --output={str(existing)!r} is a file; give a folder (it is "
                         "created if missing)")
    assert existing.read_text() == "not a folder"


def test_other_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(tool.EmbedError, match=r"^ViT has no embedding kind 'pooled'; its "
                                              r"kinds: cls, mean$"):
        tool.embed(preset="vit_tiny_digits", output=str(tmp_path), kind="pooled")
    with pytest.raises(tool.EmbedError, match=r"labels_per_class takes positive counts or "
                                              r"'all', got 'ten'"):
        tool.embed(preset="lenet5", output=str(tmp_path), labels_per_class=["ten"])
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)  # scikit-learn missing
    with pytest.raises(tool.EmbedError, match=r"^the t-SNE map needs scikit-learn: pip "
                                              r"install 'keras-zoo\[embed\]'"):
        tool.write_map(str(tmp_path / "m.png"), np.zeros((5, 3)), None, "t")


def test_default_training_split_pairs_with_the_embedded_one():
    assert tool.default_train_dataset("digits:test") == "digits:train"
    assert tool.default_train_dataset("tfds:mnist:test") == "tfds:mnist:train"
    assert tool.default_train_dataset("digits:train") is None  # would score on its own labels
    assert tool.default_train_dataset("synthetic:64") is None
    assert tool.default_train_dataset("points.npz") is None


def test_a_text_dataset_for_an_image_model_is_the_familys_one_line_error(tmp_path):
    from keras_zoo.data import DatasetError

    with pytest.raises(DatasetError, match=r"^dataset 'english_prose' is text; LeNet trains "
                                           r"on images"):
        tool.embed(preset="lenet5", dataset="english_prose", output=str(tmp_path / "out"),
                   progress=False)
