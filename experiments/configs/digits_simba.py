"""A 2-stage SiMBA (EinFFT channel mixer, 8x8 then 4x4 tokens) on the bundled digits."""

CONFIG = {
    "preset": "simba_tiny_digits",
    "dataset": "digits",
    "epochs": 20,
    "global_batch_size": 64,
    "learning_rate": 1e-3,
    "warmup_steps": 100,
    "weight_decay": 0.05,
}
