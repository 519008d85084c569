"""A 4-block GPT (width 128, 4 heads, windows of 128 tokens, 1,088,256 parameters)
on the bundled English prose (CPython / NumPy / scikit-learn docstrings and the
Python reference). Its SentencePiece vocabulary of 2,048 is trained on the
training split by the trainer (kept in <model_dir>/tokenizer). 4,000 steps of
16 windows (8.2 M tokens, ~4.7 passes over the 1.75 M training tokens; about
20 minutes on one CPU core here); no dropout: the trainer keeps the best
validation checkpoint (best/), which the recipe evaluates. Evaluate it against
unigram and bigram baselines with ``python -m experiments.recipes.gpt_prose``.
``text_mamba.py`` is the Mamba of the same size beside it.
"""

CONFIG = {
    "preset": "gpt_tiny",
    "model_overrides": {"vocab_size": 2048, "max_positions": 256, "sequence_length": 128,
                        "hidden_dim": 128, "num_layers": 4, "num_heads": 4, "dropout": 0.0,
                        "prefill_length": 32},
    "dataset": "english_prose",
    "train_steps": 4000,
    "eval_every": 1000,
    "global_batch_size": 16,
    "learning_rate": 2e-3,
    "warmup_steps": 100,
    "weight_decay": 0.1,
    "clipnorm": 1.0,
}
