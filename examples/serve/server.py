"""Serve a lit_ifm export over HTTP with the standard library: raw JSON rows in, scores and top-N items out.

    python examples/serve/server.py EXPORT_FOLDER --item-field item [--host 127.0.0.1 --port 8000]

    POST /score      {"rows": [{"user": "u1", "item": "i9", ...}, ...]}         -> {"scores": [...]}
    POST /recommend  {"context": {"user": "u1", ...}, "candidates": [...], "k": 10}
                                                                                 -> {"items": [{"item", "score"}]}
    GET  /health                                                                 -> {"ok": true}

Without "candidates", /recommend ranks every item the model knows. Requests are bounded (body size, rows); a bad
request gets HTTP 400 and {"error": "..."}. The model runs in onnxruntime (model.onnx) or torch (model.pt2).
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from encoder import Encoder

MAX_BODY_BYTES = 1 << 20
MAX_ROWS = 10_000


class Model:
    """The exported model: ids and values in, one score per row out."""

    def __init__(self, folder: Path):
        if (folder / "model.onnx").is_file():
            import onnxruntime

            runtime = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
            self.run = lambda ids, values: runtime.run(None, {"ids": ids, "values": values})[0]
        else:
            import torch

            module = torch.export.load(str(folder / "model.pt2")).module()
            self.run = lambda ids, values: module(torch.from_numpy(ids), torch.from_numpy(values)).numpy()

    def scores(self, encoded: list[tuple[list[int], list[float]]]) -> list[float]:
        ids = np.array([row[0] for row in encoded], dtype=np.int64)
        values = np.array([row[1] for row in encoded], dtype=np.float32)
        return self.run(ids, values).astype(float).tolist()


class Recommender:
    """Scores rows, and ranks an item field's values for a context."""

    def __init__(self, folder: str | Path, item_field: str | None):
        folder = Path(folder)
        self.encoder, self.model = Encoder(folder / "encoder.json"), Model(folder)
        if item_field is not None and item_field not in self.encoder.names:
            raise ValueError(f"--item-field {item_field!r} is not a field; the fields are {self.encoder.names}")
        self.item_field = item_field

    def score(self, rows: list[dict]) -> list[float]:
        return self.model.scores([self.encoder.encode(row) for row in rows]) if rows else []

    def recommend(self, context: dict, candidates: list | None, k: int) -> list[dict]:
        if self.item_field is None:
            raise ValueError("the server was started without --item-field")
        named = sorted(set(context) & {self.item_field, *self.encoder.item_fields})
        if named:
            raise ValueError(f"the context names item fields {named}; leave them out: each item brings its own")
        if candidates is None:
            field = self.encoder.fields[self.encoder.names.index(self.item_field)]
            candidates = field["vocabulary"] or []
        known = self.encoder.positions[self.encoder.names.index(self.item_field)]
        unknown = [item for item in candidates if known is not None and str(item) not in known]
        if unknown:
            raise ValueError(f"candidate items the model never saw: {unknown[:5]}")
        bounded(candidates, "candidates")
        encoded = [self.encoder.with_item_attributes(*self.encoder.encode({**context, self.item_field: item}))
                   for item in candidates]
        scores = self.model.scores(encoded)
        best = sorted(zip(candidates, scores), key=lambda pair: -pair[1])[:k]
        return [{"item": item, "score": score} for item, score in best]


def bounded(rows: list, what: str) -> list:
    if not isinstance(rows, list) or len(rows) > MAX_ROWS:
        raise ValueError(f"{what} must be a list of at most {MAX_ROWS} entries")
    return rows


def handler(recommender: Recommender) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/health":
                self._answer(200, {"ok": True})
            else:
                self._answer(404, {"error": f"no such path {self.path}"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._answer(413, {"error": f"the body is over {MAX_BODY_BYTES} bytes"})
                return
            try:
                request = json.loads(self.rfile.read(length) or b"{}")
                if self.path == "/score":
                    self._answer(200, {"scores": recommender.score(bounded(request.get("rows", []), "rows"))})
                elif self.path == "/recommend":
                    items = recommender.recommend(request.get("context") or {}, request.get("candidates"),
                                                  int(request.get("k", 10)))
                    self._answer(200, {"items": items})
                else:
                    self._answer(404, {"error": f"no such path {self.path}"})
            except (ValueError, TypeError, AttributeError) as error:
                self._answer(400, {"error": str(error)})

        def _answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args) -> None:  # quiet: one line per request is noise in a service log
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", help="the folder `python -m lit_ifm export` wrote")
    parser.add_argument("--item-field", help="the field /recommend ranks the values of")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    options = parser.parse_args()
    server = ThreadingHTTPServer((options.host, options.port), handler(Recommender(options.export, options.item_field)))
    print(f"serving {options.export} on http://{options.host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
