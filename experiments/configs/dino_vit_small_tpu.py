"""DINO ViT-S/16 pretraining on ImageNet-1k on a Cloud TPU (Caron et al. 2021).

    python -m experiments.train --config=experiments/configs/dino_vit_small_tpu.py \
        --tpu=my-tpu --model_dir=gs://bucket/dino_vit_s16 [--dry_run]

The paper's ViT-S/16 run: 100 epochs at batch 1024, AdamW, learning rate
0.0005 * batch / 256 = 0.002 after 10 warm-up epochs, cosine to 1e-6, weight
decay 0.04, teacher temperature warmed up from 0.04 to 0.07 over 30 epochs
(the "boosted" recipe), teacher momentum 0.996 -> 1, 2 x 224 px global and
8 x 96 px local crops. Labels are never used: ``eval_dataset`` only tracks
the student-to-teacher cross-entropy. Judge the features afterwards with
``keras_zoo.evaluation`` (k-NN, linear probe) on the exported backbone.

What main_dino.py does beyond a generic optimizer lives in ``DINO.train_step``
(the trainer stays generic): the weight decay follows a cosine from this
config's 0.04 to the model's ``weight_decay_end`` = 0.4; each weight's
gradient is clipped to norm 3.0; the last layer is frozen in epoch 1 and its
Adam state starts when it is unfrozen; the teacher runs in training mode and
the EMA covers parameters only; the student has stochastic depth 0.1 (the
model's ``drop_path_rate``). The trainer does not decay biases and norm scales
(``utils.get_params_groups``). Multi-crop cuts each view from the decoded
ImageNet image (``DINO.train_input_transform``, per example).
"""

IMAGENET_TRAIN = 1_281_167
BATCH = 1024
EPOCHS = 100
STEPS_PER_EPOCH = IMAGENET_TRAIN // BATCH  # 1251, drop_remainder

CONFIG = {
    "preset": "dino_vit_small_patch16",
    # The schedules inside DINO.train_step (teacher momentum, temperature
    # warm-up, last-layer freeze) count steps, so they need the run length.
    "model_overrides": {
        "steps_per_epoch": STEPS_PER_EPOCH,
        "total_steps": EPOCHS * STEPS_PER_EPOCH,
        "warmup_teacher_temperature": 0.04,
        "teacher_temperature": 0.07,
        "warmup_teacher_temperature_epochs": 30,
        "num_local_crops": 8,
        "local_crop_size": 96,
    },
    "dataset": "tfds:imagenet2012",
    "eval_dataset": "tfds:imagenet2012:validation",
    "strategy": "tpu",
    "global_batch_size": BATCH,
    "epochs": EPOCHS,
    "eval_every": 10 * STEPS_PER_EPOCH,
    "learning_rate": 0.0005 * BATCH / 256,
    "warmup_steps": 10 * STEPS_PER_EPOCH,
    "min_learning_rate": 1e-6,
    "optimizer": "adamw",
    "weight_decay": 0.04,
    "clipnorm": None,  # DINO clips each weight's gradient itself (clip_grad=3.0)
    "mixed_precision": "bfloat16",
    "jit_compile": True,
    "steps_per_execution": 90,  # divides eval_every (12,510)
}
