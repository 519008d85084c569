"""BERT-Tiny (2 blocks, width 128, 2 heads) pre-trained with masked LM + next-sentence
prediction on the bundled english_prose (827 training documents, 5.5 M characters);
a WordPiece vocabulary of 8,192 tokens is trained on the training split first.
Sequences of 128 tokens, 20 predictions each, as the original's first phase.
The optimiser is the original's (optimization.create_optimizer): AdamWeightDecay (no
bias correction, epsilon 1e-6, decay 0.01 off LayerNorm and biases), linear warm-up then
linear decay to 0, global-norm clip 1.0."""

CONFIG = {
    "preset": "bert_tiny_pretraining",
    "dataset": "english_prose",
    "epochs": 3,
    "global_batch_size": 32,
    "learning_rate": 1e-3,
    "warmup_steps": 300,
    "optimizer": "bert_adamw",  # AdamWeightDecayOptimizer
    "lr_schedule": "linear",
    "weight_decay": 0.01,  # the original's weight_decay_rate
    "clipnorm": 1.0,  # run_pretraining.py clips the global norm at 1.0
}
