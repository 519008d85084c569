"""A 7-layer Mamba (width 128, 1,078,528 parameters) as a language model of the
bundled English prose, beside the GPT of ``gpt_prose.py`` (1,088,256
parameters): the same data, tokenizer, windows, batch and optimiser, and a
similar wall time. On this CPU a Mamba training step costs ~6.5x a GPT step
(the selective scan is a chain of memory-bound elementwise ops here, not the
fused CUDA kernel of the reference), so the same wall time is 600 steps
(1.2 M tokens) against the GPT's 4,000. Copy the GPT run's tokenizer into the
model dir first (``runs/mamba_prose/tokenizer``) so both read the same tokens
(otherwise the trainer trains one on the training split the same way).
Evaluate it with ``python -m experiments.recipes.gpt_prose
--model_dir=runs/mamba_prose``. A_log and D take no weight decay."""

import os
import runpy

_GPT = runpy.run_path(os.path.join(os.path.dirname(__file__), "gpt_prose.py"))["CONFIG"]

CONFIG = {
    **{k: v for k, v in _GPT.items() if k not in ("preset", "model_overrides")},
    "preset": "mamba_tiny",
    "train_steps": 600,
    "eval_every": 200,
    "model_overrides": {"vocab_size": 2048, "hidden_dim": 128, "num_layers": 7,
                        "sequence_length": 128, "prefill_length": 32},
}
