"""One hidden layer of 256 on flattened 32x32 digits."""

CONFIG = {
    "preset": "mlp_small",
    "dataset": "digits",
    "epochs": 30,
    "global_batch_size": 64,
    "learning_rate": 1e-3,
    "weight_decay": 1e-4,
}
