"""A character-level text corpus from files every Python installation has: the standard library.

The default corpus is a fixed, ordered list of standard-library modules (`STDLIB_FILES`), read
from `sysconfig.get_paths()["stdlib"]` and concatenated with a newline between files. Their
text differs slightly between Python versions, so `info()` records the Python version and a
sha256 fingerprint of the token stream: compare fingerprints, not file names, across machines.

Vocabulary: id 0 for any character outside the set, then newline and printable ASCII
(space .. "~"): 97 ids in all, fixed, independent of the text.
Splits: the token stream is cut contiguously, first 80% train, next 10% valid, last 10% test.

    corpus = stdlib_corpus()
    corpus.tokens("train")          # int32 device array
    corpus.decode(corpus.tokens("valid")[:80])
"""

from __future__ import annotations

import functools
import os
import platform
import sysconfig
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from learned_opt.tasks import check_split
from models.datasets import fingerprint

STDLIB_FILES = (
    "abc.py", "bisect.py", "colorsys.py", "fnmatch.py", "heapq.py", "keyword.py",
    "numbers.py", "queue.py", "shlex.py", "string.py", "textwrap.py", "token.py",
)  # fmt: skip
VOCAB = "\n" + "".join(chr(c) for c in range(32, 127))
UNKNOWN_ID = 0
VOCAB_SIZE = len(VOCAB) + 1
SPLIT_FRACTIONS = {"train": 0.8, "valid": 0.1, "test": 0.1}
_CHAR_TO_ID = np.zeros(128, np.int32)
_CHAR_TO_ID[[ord(c) for c in VOCAB]] = np.arange(1, VOCAB_SIZE)


def encode(text: str) -> np.ndarray:
    """Character ids (int32); characters outside VOCAB map to UNKNOWN_ID."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    ascii_codes = np.where(codes < 128, codes, 0).astype(np.int64)
    return np.where(codes < 128, _CHAR_TO_ID[ascii_codes], UNKNOWN_ID).astype(np.int32)


def decode(ids) -> str:
    """Text for character ids; UNKNOWN_ID becomes "?"."""
    return "".join("?" if i == UNKNOWN_ID else VOCAB[i - 1] for i in np.asarray(ids).tolist())


class CharCorpus:
    """A character-level token stream with contiguous train / valid / test splits."""

    vocab_size = VOCAB_SIZE

    def __init__(self, name: str, text: str, sources: Sequence[str]):
        ids = encode(text)
        n = len(ids)
        cut_train = int(n * SPLIT_FRACTIONS["train"])
        cut_valid = cut_train + int(n * SPLIT_FRACTIONS["valid"])
        self.name = name
        self.sources = tuple(sources)
        self.fingerprint = fingerprint(ids, extra=name)
        parts = {
            "train": ids[:cut_train],
            "valid": ids[cut_train:cut_valid],
            "test": ids[cut_valid:],
        }
        self._host = parts
        with jax.ensure_compile_time_eval():  # concrete even if first built inside a trace
            self._device = {split: jnp.asarray(part) for split, part in parts.items()}

    def tokens(self, split: str) -> jax.Array:
        """The int32 token stream of `split` (device array)."""
        check_split(split)
        return self._device[split]

    decode = staticmethod(decode)

    def info(self) -> dict:
        """JSON-able: files, sizes, fingerprint, Python version, next-character baselines."""
        counts = np.bincount(self._host["train"], minlength=VOCAB_SIZE)
        majority = int(counts.argmax())
        return {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "sources": list(self.sources),
            "python_version": platform.python_version(),
            "vocab_size": VOCAB_SIZE,
            "split_sizes": {s: int(len(p)) for s, p in self._host.items()},
            "random_guess_accuracy": 1.0 / VOCAB_SIZE,
            "zero_rule_accuracy": float(np.mean(self._host["test"] == majority)),
            "zero_rule_class": majority,
        }


def read_text_files(paths: Sequence[str]) -> str:
    """The files' text joined by newlines; a missing file raises naming its path."""
    texts = []
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"text corpus file not found: {path!r} (expected a text file)")
        with open(path, encoding="utf-8", errors="replace") as f:
            texts.append(f.read())
    return "\n".join(texts)


@functools.cache
def stdlib_corpus(files: tuple[str, ...] = STDLIB_FILES) -> CharCorpus:
    """The corpus of the given standard-library files (default STDLIB_FILES), in that order."""
    root = sysconfig.get_paths()["stdlib"]
    paths = [os.path.join(root, name) for name in files]
    return CharCorpus("stdlib_chars", read_text_files(paths), files)


def file_corpus(paths: Sequence[str], name: str = "file_chars") -> CharCorpus:
    """A corpus from the user's own text files, in the given order."""
    return CharCorpus(name, read_text_files(paths), [os.fspath(p) for p in paths])
