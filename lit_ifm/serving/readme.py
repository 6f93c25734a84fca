"""The README an export folder carries: what the model takes and gives, and how to load and call it."""

from __future__ import annotations

_EXAMPLE = """import json
from pathlib import Path

{imports}

signature = json.loads(Path("signature.json").read_text())
{load}

# Two rows: every field's out-of-vocabulary feature in its first slot; a row of empty slots.
slots = signature["inputs"]["ids"]["shape"][1]
ids = {array}.full((2, slots), signature["padding_id"], dtype={array}.int64)
values = {array}.zeros((2, slots), dtype={array}.float32)
for field in signature["fields"]:
    ids[0, field["first_slot"]] = field["oov_id"]
    values[0, field["first_slot"]] = 1.0
{call}
print(scores)
"""

_SERVING = {
    "torch": {"imports": "import torch", "array": "torch",
              "load": 'model = torch.export.load("model.pt2").module()', "call": "scores = model(ids, values)"},
    "onnx": {"imports": "import numpy as np\nimport onnxruntime", "array": "np",
             "load": 'runtime = onnxruntime.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])',
             "call": '(scores,) = runtime.run(["scores"], {"ids": ids, "values": values})'},
}
_NEEDS = {"torch": "torch", "onnx": "onnxruntime and numpy"}


def usage_example(format: str) -> str:
    """Python that loads the export in its folder and scores two rows: every field's out-of-vocabulary feature,
    and a row of empty slots. It needs ``torch`` or ``onnxruntime``, never lit_ifm; it ends with ``scores``."""
    return _EXAMPLE.format(**_SERVING[format])


_README = """# {name} for serving

A {task} model exported with {tool} by lit_ifm {lit_ifm} (torch {torch}). Serving it needs {needs}, not lit_ifm.

| file | what it holds |
| --- | --- |
{files}

## Inputs and output

- `ids`: `(B, {slots})` int64, {ids} (`padding_id` = {padding_id}).
- `values`: `(B, {slots})` float32, {values}.
- output `{output}`: `(B,)` float32, {meaning}.

B is any number of rows. The slots hold the fields in this order (a multi-valued field fills its slots from the
first, one feature each):

| field | kind | slots | vocabulary size (its out-of-vocabulary id included) | out-of-vocabulary id |
| --- | --- | --- | --- | --- |
{fields}
{pairs}
## Load and call

In this folder:

```python
{example}```
"""


def export_readme(signature: dict) -> str:
    """The README of an export folder, from its ``signature.json`` (:func:`~lit_ifm.serving.serving_signature`)."""
    format, inputs = signature["format"], signature["inputs"]
    fields = []
    for field in signature["fields"]:
        first, last = field["first_slot"], field["first_slot"] + field["slots"] - 1
        slots = str(first) if first == last else f"{first}-{last}"
        fields.append(f"| {field['name']} | {field['kind']} | {slots} | {field['vocabulary_size']} | {field['oov_id']} |")
    pairs = signature.get("pairs")
    top = "" if pairs is None or pairs["computed"] == "all" else (
        f"\nThe model computes the top {len(pairs['computed'])} of its {pairs['total']} slot pairs by field-aspect "
        "norm, as its evaluation did in training (`pairs` in `signature.json`).\n")
    return _README.format(
        name=signature["model"].rpartition(".")[2], task=signature["task"],
        tool="`torch.export`" if format == "torch" else "ONNX", needs=_NEEDS[format],
        lit_ifm=signature["versions"]["lit_ifm"], torch=signature["versions"]["torch"],
        files="\n".join(f"| `{file}` | {description} |" for file, description in signature["files"].items()),
        slots=inputs["ids"]["shape"][1], ids=inputs["ids"]["description"], padding_id=signature["padding_id"],
        values=inputs["values"]["description"], output=signature["output"]["name"],
        meaning=signature["output"]["description"], fields="\n".join(fields), pairs=top, example=usage_example(format))
