"""A 4-layer Mamba (width 128, ~0.7 M parameters) as a language model of the bundled
English prose: next-token windows of 128 SentencePiece tokens (vocabulary 2,048,
trained on the training split). The GPT recipe of the same size and budget sits
next to it (text_gpt.py) for the README's perplexity comparison."""

CONFIG = {
    "preset": "mamba_tiny",
    "model_overrides": {"vocab_size": 2048, "hidden_dim": 128, "num_layers": 4,
                        "sequence_length": 128, "prefill_length": 64},
    "dataset": "english_prose",
    "epochs": 3,
    "global_batch_size": 32,
    "learning_rate": 2e-3,
    "warmup_steps": 100,
    "weight_decay": 0.1,
    "clipnorm": 1.0,
}
