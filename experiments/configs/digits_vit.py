"""A 2-block ViT (8x8 patches of a 32x32 digit, width 64) on the bundled digits."""

CONFIG = {
    "preset": "vit_tiny_digits",
    "dataset": "digits",
    "epochs": 60,
    "global_batch_size": 64,
    "learning_rate": 1e-3,
    "warmup_steps": 100,
    "weight_decay": 0.05,
}
