r"""Translates with an exported Transformer .tflite file alone (host-side loop).

    python -m export.translate --tflite=runs/en_de/transformer.tflite \
        --tokenizer=runs/en_de/best "File not found" "Permission denied"

The file holds two signatures (``Transformer.serving_signatures``): ``encode``
(source ids padded to max_source_length -> cross-attention caches + source
mask) and ``decode`` (one token, its position, the self-attention cache ->
logits + the updated cache). This loop pads the source, runs ``encode``
once, then ``decode`` once per target token (greedy), keeping the cache
between calls: the same computation as ``Transformer.translate(beam_size=1)``.
Only the LiteRT interpreter and the tokenizer file are needed.
"""

import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class TFLiteTranslator:
    """Greedy translation with the ``encode``/``decode`` signatures of a .tflite file."""

    def __init__(self, path, tokenizer=None, num_threads=1):
        from ai_edge_litert.interpreter import Interpreter

        if not os.path.isfile(path):
            raise FileNotFoundError(f"no .tflite file at {path!r}")
        self.interpreter = Interpreter(model_path=path, num_threads=num_threads)
        signatures = self.interpreter.get_signature_list()
        missing = {"encode", "decode"} - set(signatures)
        if missing:
            raise ValueError(f"{path!r} has signatures {sorted(signatures)}, not the "
                             f"Transformer's encode and decode (missing {sorted(missing)})")
        self.encoder = self.interpreter.get_signature_runner("encode")
        self.decoder = self.interpreter.get_signature_runner("decode")
        details = self.decoder.get_input_details()
        self.cache_shape = tuple(details["cache"]["shape"])
        self.max_source = int(self.encoder.get_input_details()["source_ids"]["shape"][1])
        self.max_target = self.cache_shape[4]
        self.tokenizer = tokenizer
        self.step_seconds = []

    def translate_ids(self, source_ids, start_id=2, end_id=3, max_length=None):
        """One source (ids ending in the end token) -> target ids (greedy)."""
        if len(source_ids) > self.max_source:
            raise ValueError(f"a source of {len(source_ids)} tokens passes the exported "
                             f"max_source_length={self.max_source}")
        source = np.zeros((1, self.max_source), np.int32)
        source[0, :len(source_ids)] = source_ids
        encoded = self.encoder(source_ids=source)
        cache = np.zeros(self.cache_shape, np.float32)
        from keras_zoo.models.decoding import target_limit  # Keras' rule, per sentence

        limit = target_limit(len(source_ids), self.max_target, max_length)
        token, out = start_id, []
        for index in range(limit):
            started = time.perf_counter()
            result = self.decoder(token_id=np.array([[token]], np.int32),
                                  index=np.array([index], np.int32), cache=cache,
                                  cross_cache=encoded["cross_cache"],
                                  source_mask=encoded["source_mask"])
            self.step_seconds.append(time.perf_counter() - started)
            cache = result["cache"]
            token = int(np.argmax(result["logits"][0]))
            if token == end_id:
                break
            out.append(token)
        return out

    def translate(self, texts):
        if self.tokenizer is None:
            raise ValueError("translate() on strings needs the tokenizer (--tokenizer=FOLDER)")
        t = self.tokenizer
        limit = self.max_source - 1
        return [t.decode(self.translate_ids(ids[:limit] + [t.end_id], t.start_id, t.end_id))
                if text else "" for ids, text in zip(t.encode(list(texts)), texts)]


def main(argv):
    from absl import flags

    flags.DEFINE_string("tflite", None, "The exported Transformer .tflite file.")
    flags.DEFINE_string("tokenizer", None, "A preset folder holding tokenizer.json + its file.")
    flags.DEFINE_integer("num_threads", 1, "Interpreter threads.")
    flags.FLAGS(argv)
    from keras_zoo.data.tokenizers import Tokenizer, TokenizerError

    texts = flags.FLAGS(argv)[1:]
    try:
        if not flags.FLAGS.tflite or not flags.FLAGS.tokenizer:
            raise ValueError("give --tflite=FILE and --tokenizer=PRESET_FOLDER")
        translator = TFLiteTranslator(flags.FLAGS.tflite, Tokenizer.load(flags.FLAGS.tokenizer),
                                      flags.FLAGS.num_threads)
        for source, target in zip(texts, translator.translate(texts)):
            print(f"{source}\t{target}")
    except (ValueError, FileNotFoundError, TokenizerError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv)
