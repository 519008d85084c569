"""LeNet-5 (tanh, average pooling, as in 1998) on the bundled digits, 32x32x1."""

CONFIG = {
    "preset": "lenet5",
    "dataset": "digits",
    "epochs": 30,
    "global_batch_size": 64,
    "learning_rate": 3e-3,
    "weight_decay": 1e-4,
}
