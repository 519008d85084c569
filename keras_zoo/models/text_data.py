"""The trainer's data hooks that every text family shares (Transformer, BERT,
GPT, Mamba): a dataset spec -> a cached tf.data pipeline of the task the family
trains on, ``synthetic[:N]`` -> random ids of the training shape (dry runs and
throughput at the real shapes), and the tokenizer of a run, loaded from
``<work_dir>/tokenizer`` on a resumed run or trained on the training split.

The mixin also holds the model's ``tokenizer`` (a plain attribute: it travels
in preset folders, not in the graph; one with more tokens than the model's
``vocab_size`` is refused) and ``_require_tokenizer(what)`` (one clear error
when text comes in and there is no tokenizer).

A family mixes ``TextData`` into its ``ZooModel`` and supplies two things:
``data_task()`` (the task its training data must have; raise ValueError there
when the model's configuration cannot train at all) and
``synthetic_examples(n, rng)`` (a dict of NumPy columns, n rows, plus the
TextInfo task name).
"""

import os

import numpy as np


class TextData:
    """Mixin for text families: ``load_data``, the model's tokenizer and a run's tokenizer."""

    # A preset folder of a text family must carry its tokenizer (presets.py).
    requires_tokenizer = True
    # Appended to the no-tokenizer error (e.g. which tokenizer class fits).
    tokenizer_hint = ""

    @property
    def tokenizer(self):
        return vars(self).get("_zoo_tokenizer")

    @tokenizer.setter
    def tokenizer(self, value):
        vocab = self.get_zoo_config()["vocab_size"]
        if value is not None and value.vocab_size > vocab:
            raise ValueError(f"tokenizer has {value.vocab_size} tokens, more than the model's "
                             f"vocab_size={vocab}")
        vars(self)["_zoo_tokenizer"] = value  # not tracked by Keras

    def _require_tokenizer(self, what):
        if self.tokenizer is None:
            raise ValueError(
                f"this {type(self).__name__} has no tokenizer, so {what} needs token ids: load "
                "a preset folder that carries one, train one (experiments.train does), or set "
                f"model.tokenizer{self.tokenizer_hint}")
        return self.tokenizer

    def data_task(self):
        """The ``keras_zoo.data.text`` task (TRANSLATION, DOCUMENTS, ...) to train on."""
        raise NotImplementedError

    def synthetic_examples(self, n, rng):
        """(columns: dict of NumPy arrays with n rows, task name, TextInfo kwargs)."""
        raise NotImplementedError

    def throughput_units(self, examples):
        return examples, "seq"

    def load_data(self, spec, split="train", seed=0, data_dir=None):
        from keras_zoo.data import text

        if spec.startswith("synthetic"):
            return self._synthetic_data(spec, seed)
        task = self.data_task()
        ds, info = text.load(spec, split, data_dir=data_dir)
        text.require_task(info, task, self.data_owner())
        return ds.cache(), info

    def data_owner(self):
        """How errors name the model (e.g. "BERT(task='qa')")."""
        return type(self).__name__

    def _synthetic_data(self, spec, seed):
        import tensorflow as tf

        from keras_zoo.data import DatasetError, TextInfo

        count = spec.split(":")[1] if ":" in spec else "1024"
        if not count.isdigit() or int(count) <= 0:
            raise DatasetError(f"{spec!r}: synthetic:N needs a positive whole number of "
                               f"examples, got {count!r}")
        n = int(count)
        columns, task, extra = self.synthetic_examples(n, np.random.default_rng(seed))
        return (tf.data.Dataset.from_tensor_slices(columns),
                TextInfo("synthetic", "train", task, n, **extra))

    def run_tokenizer(self, work_dir, train):
        """Sets ``self.tokenizer`` unless it has one: the run's saved tokenizer
        (``<work_dir>/tokenizer``, a resumed run) or ``train()``, saved there."""
        from keras_zoo.data.tokenizers import Tokenizer

        saved = os.path.join(work_dir, "tokenizer") if work_dir else None
        if self.tokenizer is None and saved and Tokenizer.exists(saved):
            self.tokenizer = Tokenizer.load(saved)
        if self.tokenizer is None:
            self.tokenizer = train()
            if saved:
                self.tokenizer.save(saved)
        return self.tokenizer
