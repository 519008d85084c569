"""English -> German on the bundled gettext messages: a 3+3-layer Transformer
(d_model 256, 4 heads, d_ff 1024, dropout 0.1, label smoothing 0.1,
``transformer_tiny_gettext``) with the paper's optimiser (Adam 0.9 / 0.98 /
1e-9) and inverse-square-root schedule. The paper's formula with d_model 256
and 4,000 warm-up steps peaks at 256^-0.5 * 4000^-0.5 = 9.9e-4; this run is
only 600 steps long (~4 passes over the data: what fits in 30 minutes on 2 CPU
cores), so it warms up for 200 steps to a peak of 1e-3 and then decays as
1/sqrt(step). The shared SentencePiece vocabulary (8,000) is trained
on the training split on the first run and kept in the run folder. Batches:
length buckets of 8..64 subwords, 64 sentences at 64 subwords (~4,000 tokens
per batch side; as many sentences as fit in every shorter bucket): 144
batches per pass over the 35,176 training pairs."""

CONFIG = {
    "preset": "transformer_tiny_gettext",
    "dataset": "gettext_en_de",
    "train_steps": 600,
    "eval_every": 200,
    "global_batch_size": 64,
    "optimizer": "adam",
    "adam_beta_2": 0.98,
    "adam_epsilon": 1e-9,
    "lr_schedule": "inverse_sqrt",
    "warmup_steps": 200,
    "learning_rate": 1e-3,
    "weight_decay": 0.0,
}
