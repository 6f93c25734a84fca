"""Where a source's files are (a local folder or file, or a HuggingFace Hub repo) and where encoded stores of them
are kept."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from lit_ifm.data.rows.splits import SPLITS
from lit_ifm.errors import DataError

TABLE_FORMATS = (".csv", ".tsv", ".parquet", ".jsonl", ".json")
_SPLIT_ALIASES = {"train": ("train",), "validation": ("validation", "valid", "val"), "test": ("test",)}
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")



@dataclass(frozen=True)
class SourceFiles:
    """The files of a source: one per split, or a single ``all`` file to be split at random."""

    layout: str  # "libfm" or "table"
    files: dict[str, Path]  # split name ("train", "validation", "test" or "all") -> file

    @property
    def has_splits(self) -> bool:
        """True for a train/validation/test layout, False for one file to split at random."""
        return "train" in self.files

def find_source_files(source: str | Path) -> SourceFiles:
    """The split files of a local file or folder.

    A folder holds ``<name>.train.libfm``, ``<name>.validation.libfm``, ``<name>.test.libfm`` (the paper's
    layout) or ``train``/``valid``/``test`` table files (``.csv``, ``.tsv``, ``.parquet``, ``.jsonl``), as in
    the Hub's ``reczoo/Frappe_x1``; a folder with one data file, or a single file, is split at random.
    """
    path = Path(source).expanduser()
    if path.is_file():
        return SourceFiles(_layout_of(path), {"all": path})
    if not path.is_dir():
        raise DataError(f"data source {str(source)!r}: no such file or folder")
    candidates = sorted(p for p in path.iterdir() if p.is_file() and _layout_of(p, strict=False))
    if not candidates:
        raise DataError(f"data source {path}: no data files; expected <name>.train.libfm/.validation.libfm/"
                        f".test.libfm or train/valid/test files ending in {sorted(TABLE_FORMATS)} or .libfm")
    files: dict[str, Path] = {}
    for split, aliases in _SPLIT_ALIASES.items():
        for candidate in candidates:
            stem_parts = candidate.name.lower().split(".")
            if any(alias in stem_parts[:-1] for alias in aliases):
                files.setdefault(split, candidate)
    if not files:
        if len(candidates) > 1:
            raise DataError(f"data source {path}: found {[c.name for c in candidates]} but no file named for a "
                            "split; name them train/valid/test (or <name>.train.libfm ...) or pass one file")
        return SourceFiles(_layout_of(candidates[0]), {"all": candidates[0]})
    missing = [split for split in SPLITS if split not in files]
    if missing:
        raise DataError(f"data source {path}: found {sorted(f.name for f in files.values())} but no "
                        f"{' or '.join(missing)} file; expected one file per split (train, valid, test)")
    layouts = {_layout_of(f) for f in files.values()}
    if len(layouts) > 1:
        raise DataError(f"data source {path}: split files mix libFM and table formats: {sorted(map(str, files.values()))}")
    return SourceFiles(layouts.pop(), files)


def _layout_of(path: Path, strict: bool = True) -> str:
    suffix = path.suffix.lower()
    if suffix == ".libfm":
        return "libfm"
    if suffix in TABLE_FORMATS:
        return "table"
    if strict:
        raise DataError(f"{path}: unknown file type {suffix!r}; expected .libfm or one of {sorted(TABLE_FORMATS)}")
    return ""


def is_hub_id(source: str) -> bool:
    """Whether ``source`` names a HuggingFace Hub dataset (``owner/name``) rather than a local path."""
    return bool(_HUB_ID.match(source)) and not Path(source).exists()


def download_from_hub(repo_id: str, cache_dir: str | None = None, timeout: float = 5.0) -> Path:
    """Fetch a Hub dataset repo's data files and return the local snapshot folder.

    Uses the local cache when it has the repo; otherwise checks within ``timeout`` seconds that the Hub
    answers, so an offline machine fails at once with advice rather than after a minute of retries.
    """
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    patterns = ["*.csv", "*.tsv", "*.parquet", "*.jsonl", "*.json", "*.libfm", "**/*.csv", "**/*.parquet"]
    advice = (f"Pass a local folder laid out like the Hub repo instead (train.csv, valid.csv, test.csv), "
              f"e.g. --data.source /path/to/{repo_id.split('/')[-1]}, or a folder of the paper's libFM files.")
    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=patterns,
                                      cache_dir=cache_dir, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        pass
    if constants.HF_HUB_OFFLINE:
        raise DataError(f"HuggingFace Hub dataset {repo_id!r} is not in the local cache and HF_HUB_OFFLINE is "
                        f"set, so it cannot be downloaded. {advice}")
    _check_hub_reachable(constants.ENDPOINT, repo_id, timeout, advice)
    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=patterns, cache_dir=cache_dir))
    except Exception as error:  # the Hub's own errors (missing repo, auth) carry the details
        raise DataError(f"could not download HuggingFace Hub dataset {repo_id!r}: {error}. {advice}") from error


def _check_hub_reachable(endpoint: str, repo_id: str, timeout: float, advice: str) -> None:
    import httpx

    try:
        httpx.head(endpoint, timeout=timeout, follow_redirects=True)
    except httpx.HTTPError as error:
        raise DataError(f"cannot reach the HuggingFace Hub at {endpoint} to download {repo_id!r} "
                        f"(offline? {type(error).__name__}). {advice}") from None


def default_cache_dir() -> str | None:
    """Where ``datasets`` caches parsed JSON and libFM files unless ``cache_dir`` says: ``$LIT_IFM_CACHE``, else its
    own default."""
    return os.environ.get("LIT_IFM_CACHE")


def store_root(cache_dir: str | None) -> Path:
    """Where encoded splits are stored: ``<cache_dir>/encoded``, with ``cache_dir`` defaulting to
    ``$LIT_IFM_CACHE``, else ``~/.cache/lit_ifm``."""
    return Path(cache_dir or default_cache_dir() or Path.home() / ".cache" / "lit_ifm").expanduser() / "encoded"


# What a file's content digest reads: its first and last MiB, and blocks spread evenly between them.
EDGE_BYTES = 1 << 20
SAMPLED_BLOCKS = 64
BLOCK_BYTES = 64 << 10


def file_identity(path: Path) -> tuple:
    """What says a file is unchanged since a store was built from it: its path, size, modification and change
    times, inode, and a digest of part of its content (:func:`sampled_digest`). The change time moves on every
    write, even when the modification time is set back (``touch -r``, ``cp -p``, ``rsync -t``); the digest sees an
    edit where times say nothing (a file restored from a copy, a file system that keeps no change time)."""
    status = path.stat()
    return (str(path.resolve()), status.st_size, status.st_mtime_ns, status.st_ctime_ns, status.st_ino,
            sampled_digest(path))


def sampled_digest(path: Path, edge_bytes: int = EDGE_BYTES, blocks: int = SAMPLED_BLOCKS,
                   block_bytes: int = BLOCK_BYTES) -> str:
    """A BLAKE2 digest of the size, the first and last ``edge_bytes`` of a file and ``blocks`` blocks of
    ``block_bytes`` spread evenly between them: a few MiB read whatever the file's size (all of a small file).

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as file:
    ...     _ = file.write(b"1 0:1 3:1\\n"); file.flush()
    ...     len(sampled_digest(Path(file.name)))
    32
    """
    size = path.stat().st_size
    digest = hashlib.blake2b(str(size).encode(), digest_size=16)
    with path.open("rb") as file:
        if size <= 2 * edge_bytes + blocks * block_bytes:
            digest.update(file.read())
            return digest.hexdigest()
        middle = size - 2 * edge_bytes - block_bytes
        starts = [0, *(edge_bytes + middle * index // max(blocks - 1, 1) for index in range(blocks)), size - edge_bytes]
        for start in starts:
            file.seek(start)
            digest.update(file.read(edge_bytes if start in (0, size - edge_bytes) else block_bytes))
    return digest.hexdigest()
