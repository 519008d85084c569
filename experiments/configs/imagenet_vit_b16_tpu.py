"""ViT-B/16 from scratch on ImageNet-1k, TPU v3-8 (8 cores x 16 GB).

Check it before renting the TPU (builds the full 86.6M-parameter model, one
XLA step on fake 224x224x3 batches, prints parameters / per-replica batch /
step time):

    python -m experiments.train --config=experiments/configs/imagenet_vit_b16_tpu.py \
        --dry_run --strategy=one_device --global_batch_size=8 --mixed_precision=float32

Run it:

    python -m experiments.train --config=experiments/configs/imagenet_vit_b16_tpu.py \
        --tpu=my-tpu --model_dir=gs://my-bucket/vit_b16_i1k --data_dir=gs://my-bucket/tfds

Numbers: 300 epochs, AdamW, peak lr 1e-3 for batch 1024 (DeiT's 5e-4 x 1024/512),
weight decay 0.05, 5 warmup epochs (6,255 steps), cosine to 1e-5, global-norm
clipping at 1.0 (ViT paper), bfloat16 activations, 128 images per TPU core.
Without DeiT's heavy augmentation (RandAugment, Mixup, CutMix, repeated
augmentation) ViT-B/16 from scratch on ImageNet-1k overfits: expect high-70s
top-1, not DeiT-B's 81.8 %.
"""

CONFIG = {
    "preset": "vit_base_patch16_224",
    "dataset": "tfds:imagenet2012",
    "eval_dataset": "tfds:imagenet2012:validation",
    "strategy": "tpu",
    "global_batch_size": 1024,
    "epochs": 300,
    "eval_every": 1251,  # one pass: 1,281,167 // 1024
    "learning_rate": 1e-3,
    "min_learning_rate": 1e-5,
    "warmup_steps": 6255,
    "optimizer": "adamw",
    "weight_decay": 0.05,
    "clipnorm": 1.0,
    "mixed_precision": "bfloat16",
    "steps_per_execution": 139,  # divides 1251; hides host overhead per TPU call
    "shuffle_buffer": 10_000,
    "model_overrides": {"dropout": 0.1},
}
