"""Bad flags of the command-line tools (issue 22, section 4): each is one
line naming the flag, refused before any work."""

import pytest

from experiments import embed as embed_tool
from experiments import train as trainer
from keras_zoo.data.datasets import DatasetError, parse_spec

BASE = {"preset": "mlp_small", "train_steps": 10, "model_dir": "unused"}


@pytest.mark.parametrize("config, match", [
    (dict(qat_config="momentum=0.9"), r"--qat_config=\{'momentum': 0.9\} is for quantization-"
                                      r"aware training: add --qat"),
    (dict(qat=True, qat_config='{"momentum": 0.9'), "--qat_config is not a valid JSON object"),
    (dict(qat=True, qat_config="[1, 2]"), "--qat_config item .* is not key=value"),
    (dict(qat=True, qat_config="num_bit=8"), r"--qat_config: unknown qat option\(s\) 'num_bit' \(did you mean 'num_bits'"),
    (dict(qat=True, qat_config="momentum=2"), r"--qat_config: momentum must be in \(0, 1\)"),
    (dict(model_overrides='{"dropout": 0.1'), "--model_overrides is not a valid JSON object"),
    (dict(model_overrides='{"dropout": 0.1} '), None),
    (dict(model_overrides='["dropout"]'), "--model_overrides item .* is not key=value"),
    (dict(prune_sparsity=1.5), r"--prune_sparsity must be in \(0, 1\), got 1.5"),
])
def test_trainer_flags(config, match):
    if match is None:  # the good form still parses
        assert trainer.resolve({**BASE, **config})["model_overrides"] == {"dropout": 0.1}
        return
    with pytest.raises(trainer.TrainError, match=match):
        trainer.resolve({**BASE, **config})


def test_prune_sparsity_implies_qat_as_documented():
    # --prune_sparsity alone is not ignored: it turns on quantization-aware training.
    c = trainer.resolve({**BASE, "prune_sparsity": 0.5})
    assert c["prune_sparsity"] == 0.5 and c["qat_config"] == {}


@pytest.mark.parametrize("spec, match", [
    ("gettext_en_dee", "unknown dataset 'gettext_en_dee'.*Did you mean gettext_en_de"),
    ("digitz", "unknown dataset 'digitz'.*Did you mean digits"),
])
def test_dataset_typos_suggest_image_and_text_sets(spec, match):
    with pytest.raises(DatasetError, match=match):
        parse_spec(spec)
    with pytest.raises(DatasetError, match=match):
        trainer.check_dataset_spec(spec)


@pytest.mark.parametrize("flag", ["k", "batch_size", "sprite_tile", "probe_epochs",
                                  "map_points"])
def test_embed_counts_are_checked_before_any_work(flag, tmp_path):
    # preset=None would fail later, at loading: the count check comes first.
    with pytest.raises(embed_tool.EmbedError, match=f"--{flag} must be a positive integer, "
                                                    "got 0"):
        embed_tool.embed(preset="no_such_preset", output=str(tmp_path / "out"), **{flag: 0})
