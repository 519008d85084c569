r"""Transformer base on WMT14 English->German on a Cloud TPU: the paper's setup
(Vaswani et al. 2017, section 5): shared subword vocabulary of ~37,000 tokens
trained on the training split, batches of ~25,000 source + ~25,000 target
tokens, Adam(0.9, 0.98, 1e-9), warmup 4000 steps then 1/sqrt(step), label
smoothing 0.1, dropout 0.1, 100,000 steps.

    python -m experiments.train --config=experiments/configs/wmt14_en_de_transformer_base_tpu.py \
        --tpu=my-tpu --data_dir=gs://my-bucket/tensorflow_datasets \
        --model_dir=gs://my-bucket/transformer_base_en_de [--dry_run]

Batches are length buckets of 8..256 subwords padded to static shapes (one
XLA program per bucket): ``global_batch_size`` sentences at the 256-subword
bucket is 96 x 256 = 24,576 tokens per side, and every shorter bucket holds
as many sentences as fit the same token budget.
"""

_D_MODEL, _WARMUP = 512, 4000

CONFIG = {
    "preset": "transformer_base",
    # tfds' de-en set yields (de, en) pairs; ":en-de" turns them into English -> German.
    "dataset": "tfds:wmt14_translate/de-en:train:en-de",
    "eval_dataset": "tfds:wmt14_translate/de-en:validation:en-de",
    "strategy": "tpu",
    "global_batch_size": 96,
    "train_steps": 100_000,
    "eval_every": 5_000,
    "steps_per_execution": 100,
    "optimizer": "adam",
    "adam_beta_2": 0.98,
    "adam_epsilon": 1e-9,
    "lr_schedule": "inverse_sqrt",
    "warmup_steps": _WARMUP,
    "learning_rate": _D_MODEL ** -0.5 * _WARMUP ** -0.5,   # the paper's formula's peak
    "weight_decay": 0.0,
    "mixed_precision": "bfloat16",
}
