"""A 4-block GPT (width 128, 4 heads, windows of 128 tokens, 1.09 M parameters)
on the bundled English prose (CPython / NumPy / scikit-learn docstrings and the
Python reference). Its SentencePiece vocabulary of 2,048 is trained on the
training split by the trainer (kept in <model_dir>/tokenizer). 1,200 steps of
16 windows (2.5 M tokens, ~1.4 passes over the 1.75 M training tokens); no
dropout (the model sees the data less than twice). Evaluate it against unigram
and bigram baselines with ``python -m experiments.recipes.gpt_prose``.
"""

CONFIG = {
    "preset": "gpt_tiny",
    "model_overrides": {"vocab_size": 2048, "max_positions": 256, "sequence_length": 128,
                        "hidden_dim": 128, "num_layers": 4, "num_heads": 4, "dropout": 0.0,
                        "prefill_length": 32},
    "dataset": "english_prose",
    "train_steps": 1200,
    "eval_every": 300,
    "global_batch_size": 16,
    "learning_rate": 2e-3,
    "warmup_steps": 100,
    "weight_decay": 0.1,
    "clipnorm": 1.0,
}
