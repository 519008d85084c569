"""English -> German on the bundled gettext messages: a 3+3-layer Transformer
(d_model 256, 4 heads, d_ff 1024, dropout 0.1, label smoothing 0.1) with the
paper's optimiser (Adam 0.9 / 0.98 / 1e-9) and inverse-sqrt schedule. The
shared SentencePiece vocabulary (8,000) is trained on the training split on the
first run and kept in the run folder. Batches: length buckets of 8..64
subwords, 64 sentences at 64 subwords (~4,096 tokens per batch, as many
sentences as fit in every shorter bucket)."""

_WARMUP = 4000
_D_MODEL = 256

CONFIG = {
    "preset": "transformer_tiny_gettext",
    "dataset": "gettext_en_de",
    "train_steps": 6000,
    "eval_every": 1000,
    "global_batch_size": 64,
    "optimizer": "adam",
    "adam_beta_2": 0.98,
    "adam_epsilon": 1e-9,
    "lr_schedule": "inverse_sqrt",
    "warmup_steps": _WARMUP,
    # The paper's formula: d_model^-0.5 * warmup^-0.5 at the peak.
    "learning_rate": _D_MODEL ** -0.5 * _WARMUP ** -0.5 * 2.0,
    "weight_decay": 0.0,
}
