"""A tiny ResNet (basic blocks, BatchNorm) on the bundled digits."""

CONFIG = {
    "preset": "resnet_tiny_digits",
    "dataset": "digits",
    "epochs": 20,
    "global_batch_size": 64,
    "learning_rate": 3e-3,
    "weight_decay": 1e-4,
}
