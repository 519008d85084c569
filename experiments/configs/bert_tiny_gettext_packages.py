"""BERT-Tiny fine-tuned to tell which of 8 software packages an English gettext message
comes from (gettext_packages: 8,568 / 520 / 376 balanced messages). From scratch as
written (a vocabulary of 8,192 trained on the training messages); to fine-tune a
pre-trained model, set "preset" to its folder and keep the overrides:
``--preset=RUN/best --config=experiments/configs/bert_tiny_gettext_packages.py``.
run_classifier.py's optimiser: AdamWeightDecay, linear warm-up and decay to 0, clip 1.0."""

CONFIG = {
    "preset": "bert_tiny_classifier",
    "model_overrides": {"task": "classification", "num_classes": 8, "sequence_length": 64},
    "dataset": "gettext_packages",
    "epochs": 6,
    "global_batch_size": 32,
    "learning_rate": 5e-4,
    "warmup_steps": 100,
    "optimizer": "bert_adamw",
    "lr_schedule": "linear",
    "weight_decay": 0.01,
    "clipnorm": 1.0,
}
