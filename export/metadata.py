"""TFLite Metadata for MediaPipe Tasks, written with ``flatbuffers.Builder``.

MediaPipe's Tasks (ImageClassifier, ImageEmbedder, TextClassifier,
TextEmbedder) read a model's pre- and post-processing from the TFLite
Metadata of tflite-support's ``metadata_schema.fbs`` (Apache 2.0; the copy
read here ships in the mediapipe wheel as
``mediapipe/tasks/metadata/metadata_schema.fbs``): a ``ModelMetadata``
flatbuffer (file identifier ``M001``) stored as a model buffer named
``TFLITE_METADATA``, and its associated files (labels, vocabularies) appended
to the ``.tflite`` as a zip archive. mediapipe's own ``metadata_writers`` do
not import from its wheel and tflite-support cannot share an environment with
TensorFlow 2.21, so the few tables MediaPipe reads are encoded here from the
schema's declarations (``_TABLES``: each field's slot is its position in the
declaration, a union taking two slots, its type then its value).

What MediaPipe reads (mediapipe/tasks/cc): the image tensor's
``NormalizationOptions`` (float inputs; a uint8 input gets the raw pixels),
``ImageProperties``; an output ``AssociatedFile`` of type
``TENSOR_AXIS_LABELS`` (category names, one per line); for BERT, the
``BertTokenizerOptions`` as input process unit 0 and input tensors named
``ids``, ``mask`` and ``segment_ids`` in metadata order = the subgraph's
input order.
"""

import io
import zipfile

import flatbuffers
import numpy as np

METADATA_NAME = b"TFLITE_METADATA"
FILE_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.1.0"  # BertTokenizerOptions arrived in 1.1.0

# Enum values of metadata_schema.fbs.
LABELS, VOCABULARY = 2, 5  # AssociatedFileType TENSOR_AXIS_LABELS, VOCABULARY
RGB = 1  # ColorSpaceType
_UNIONS = {
    "ContentProperties": {"FeatureProperties": 1, "ImageProperties": 2},
    "ProcessUnitOptions": {"NormalizationOptions": 1, "BertTokenizerOptions": 4},
}
# table -> fields in declaration order: (name, kind); kind is "string",
# "byte", "uint", "int", "[float]", "[string]", a table name, "[Table]" or
# "union:Union" (two slots).
_TABLES = {
    "AssociatedFile": [("name", "string"), ("description", "string"), ("type", "byte"),
                       ("locale", "string"), ("version", "string")],
    "FeatureProperties": [],
    "ImageSize": [("width", "uint"), ("height", "uint")],
    "ImageProperties": [("color_space", "byte"), ("default_size", "ImageSize")],
    "ValueRange": [("min", "int"), ("max", "int")],
    "Content": [("content_properties", "union:ContentProperties"), ("range", "ValueRange")],
    "NormalizationOptions": [("mean", "[float]"), ("std", "[float]")],
    "BertTokenizerOptions": [("vocab_file", "[AssociatedFile]")],
    "ProcessUnit": [("options", "union:ProcessUnitOptions")],
    "Stats": [("max", "[float]"), ("min", "[float]")],
    "TensorMetadata": [("name", "string"), ("description", "string"),
                       ("dimension_names", "[string]"), ("content", "Content"),
                       ("process_units", "[ProcessUnit]"), ("stats", "Stats"),
                       ("associated_files", "[AssociatedFile]")],
    "SubGraphMetadata": [("name", "string"), ("description", "string"),
                         ("input_tensor_metadata", "[TensorMetadata]"),
                         ("output_tensor_metadata", "[TensorMetadata]"),
                         ("associated_files", "[AssociatedFile]"),
                         ("input_process_units", "[ProcessUnit]"),
                         ("output_process_units", "[ProcessUnit]")],
    "ModelMetadata": [("name", "string"), ("description", "string"), ("version", "string"),
                      ("subgraph_metadata", "[SubGraphMetadata]"), ("author", "string"),
                      ("license", "string"), ("associated_files", "[AssociatedFile]"),
                      ("min_parser_version", "string")],
}
_SCALARS = {"byte": "PrependInt8Slot", "uint": "PrependUint32Slot", "int": "PrependInt32Slot"}


def _encode(builder, table, values):
    """Builds ``values`` (a dict of field -> value) as a ``table``; returns its offset.
    Children first: a flatbuffer table refers only to what precedes it."""
    slots, offsets = [], {}
    for name, kind in _TABLES[table]:
        slot = len(slots)
        slots.append((name, kind, slot))
        if kind.startswith("union:"):
            slots.append(None)  # the union's value takes the next slot
        value = values.get(name)
        if value is None or kind in _SCALARS:
            continue
        if kind == "string":
            offsets[name] = builder.CreateString(value)
        elif kind == "[float]":
            offsets[name] = builder.CreateNumpyVector(np.asarray(value, np.float32))
        elif kind.startswith("union:"):
            member, member_values = value
            offsets[name] = _encode(builder, member, member_values)
        elif kind.startswith("["):
            element = kind[1:-1]
            items = [builder.CreateString(v) if element == "string"
                     else _encode(builder, element, v) for v in value]
            builder.StartVector(4, len(items), 4)
            for item in reversed(items):
                builder.PrependUOffsetTRelative(item)
            offsets[name] = builder.EndVector()
        else:
            offsets[name] = _encode(builder, kind, value)
    builder.StartObject(len(slots))
    for entry in slots:
        if entry is None:
            continue
        name, kind, slot = entry
        value = values.get(name)
        if value is None:
            continue
        if kind in _SCALARS:
            getattr(builder, _SCALARS[kind])(slot, int(value), 0)
        elif kind.startswith("union:"):
            builder.PrependUint8Slot(slot, _UNIONS[kind[6:]][value[0]], 0)
            builder.PrependUOffsetTRelativeSlot(slot + 1, offsets[name], 0)
        else:
            builder.PrependUOffsetTRelativeSlot(slot, offsets[name], 0)
    return builder.EndObject()


def model_metadata(values):
    """A ``ModelMetadata`` dict -> the flatbuffer bytes (identifier ``M001``)."""
    builder = flatbuffers.Builder(1024)
    builder.Finish(_encode(builder, "ModelMetadata", values), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


# ---------------------------------------------------------------- the pieces MediaPipe reads

def image_input(name, normalization, height, width):
    """An image tensor: RGB, ``normalization`` = (mean, std) on 0..255 pixels
    (None for a uint8 input, which takes the pixels as they are)."""
    meta = {"name": name, "content": {"content_properties": ("ImageProperties", {
        "color_space": RGB, "default_size": {"width": width, "height": height}})}}
    if normalization is not None:
        mean, std = normalization
        meta["process_units"] = [{"options": ("NormalizationOptions",
                                              {"mean": [mean], "std": [std]})}]
        meta["stats"] = {"min": [(0 - mean) / std], "max": [(255 - mean) / std]}
    return meta


def feature_output(name, labels_file=None):
    """A score / feature vector output; ``labels_file`` names its category names."""
    meta = {"name": name, "content": {"content_properties": ("FeatureProperties", {})}}
    if labels_file:
        meta["associated_files"] = [{"name": labels_file, "type": LABELS,
                                     "description": "category names, one per line"}]
    return meta


def bert_tokenizer(vocab_file):
    """Input process unit 0 of a BERT model: WordPiece over ``vocab_file``."""
    return {"options": ("BertTokenizerOptions", {"vocab_file": [
        {"name": vocab_file, "type": VOCABULARY, "description": "WordPiece vocabulary"}]})}


# ---------------------------------------------------------------- into the .tflite file

def populate(content, metadata, files=None, edit=None):
    """``content`` (.tflite bytes) with ``metadata`` as its ``TFLITE_METADATA``
    buffer (replacing an earlier one) and ``files`` ({name: bytes}) appended
    as a zip archive, as tflite-support's MetadataPopulator lays them out.
    ``edit(model)`` may change the unpacked model (schema object API) first."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_NAME]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata, np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata.append(entry)
    if edit is not None:
        edit(model)
    builder = flatbuffers.Builder(len(content) + len(metadata) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    out = io.BytesIO(bytes(builder.Output()))
    if files:
        out.seek(0, io.SEEK_END)
        with zipfile.ZipFile(out, "a", zipfile.ZIP_STORED) as archive:
            for name, data in files.items():
                archive.writestr(name, data)
    return out.getvalue()


def read(content):
    """(``TFLITE_METADATA`` bytes or None, {associated file name: bytes}) of a file."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(bytearray(content), 0)
    metadata = None
    for i in range(model.MetadataLength()):
        if model.Metadata(i).Name() == METADATA_NAME:
            metadata = model.Buffers(model.Metadata(i).Buffer()).DataAsNumpy().tobytes()
    files = {}
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            files = {n: archive.read(n) for n in archive.namelist()}
    except zipfile.BadZipFile:
        pass
    return metadata, files


def signature_io(content):
    """{signature input/output name: subgraph tensor index position} of the
    single signature: which graph input/output each named one is."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(bytearray(content), 0)
    sub = model.Subgraphs(0)
    inputs = [sub.Inputs(i) for i in range(sub.InputsLength())]
    outputs = [sub.Outputs(i) for i in range(sub.OutputsLength())]
    sig = model.SignatureDefs(0)
    ins = {sig.Inputs(i).Name().decode(): inputs.index(sig.Inputs(i).TensorIndex())
           for i in range(sig.InputsLength())}
    outs = {sig.Outputs(i).Name().decode(): outputs.index(sig.Outputs(i).TensorIndex())
            for i in range(sig.OutputsLength())}
    return ins, outs
