"""Phrase similarity for GCG Recall: a lexical default and local sentence-embedding models.

A registry maps names to similarity builders; :func:`get_similarity` accepts a registry name or a path to
a local model folder (nothing is downloaded)::

    sim = get_similarity("token-f1")          # default, no dependencies
    sim = get_similarity("char-trigram")
    sim = get_similarity("/models/all-MiniLM-L6-v2")   # sentence-transformers or plain HF encoder folder
    matrix = sim.matrix(["tennis court-1"], ["tennis court-2", "plane"])   # shape (1, 2), values in [0, 1]

``token-f1`` (the default): phrases are lower-cased, split into alphanumeric tokens, a small stop-word list
removed (articles, ``of``, ``with``…), a plural ``s``/``es`` stripped from words longer than three letters;
the similarity is the F1 of the two token *sets* (``2|A∩B| / (|A| + |B|)``). ``tennis court-1`` vs
``tennis court-2``: 2/3; ``small vehicles`` vs ``vehicle``: 2/3; ``plane`` vs ``large white plane``: 1/2.
``char-trigram``: cosine of character-trigram count vectors of the normalised phrase padded with spaces.

Embedding models (GLaMM used the mean of ``bert-base-uncased``'s last hidden states): a folder with
``modules.json`` loads through ``sentence_transformers`` when installed; any other folder loads with
``transformers.AutoModel`` and mean pooling over tokens. Cosine similarities are clipped to [0, 1].
These import torch lazily, only when a model path is given; the rest of :mod:`geopixel.eval` stays
torch-free.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

STOP_WORDS = frozenset(["a", "an", "the", "of", "with", "and", "at", "in", "on", "to", "for", "its", "their", "this", "that"])


class PhraseSimilarity(Protocol):
    """Anything that scores phrase pairs in [0, 1]."""

    name: str

    def matrix(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """``len(a) × len(b)`` float64 similarities."""
        ...


def normalise_tokens(phrase: str) -> list[str]:
    """Lower-case alphanumeric tokens, stop words dropped, plural ``s``/``es`` stripped (len > 3)."""
    out = []
    for t in re.findall(r"[a-z0-9]+", phrase.lower()):
        if t in STOP_WORDS:
            continue
        if len(t) > 3 and not t.isdigit():
            if t.endswith(("ches", "shes", "sses", "xes")):
                t = t[:-2]
            elif t.endswith("ies"):
                t = t[:-3] + "y"
            elif t.endswith("s") and not t.endswith("ss"):
                t = t[:-1]
        out.append(t)
    return out


class TokenF1:
    """F1 of normalised token sets (see the module docstring)."""

    name = "token-f1"

    @staticmethod
    def pair(a: str, b: str) -> float:
        sa, sb = set(normalise_tokens(a)), set(normalise_tokens(b))
        if not sa and not sb:
            return 1.0 if a.strip().lower() == b.strip().lower() else 0.0
        if not sa or not sb:
            return 0.0
        return 2.0 * len(sa & sb) / (len(sa) + len(sb))

    def matrix(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        return np.array([[self.pair(x, y) for y in b] for x in a], dtype=np.float64).reshape(len(a), len(b))


class CharTrigram:
    """Cosine of character-trigram counts of ``" " + normalised phrase + " "``."""

    name = "char-trigram"

    @staticmethod
    def grams(text: str) -> Counter[str]:
        s = " " + " ".join(normalise_tokens(text)) + " "
        return Counter(s[i : i + 3] for i in range(len(s) - 2))

    def pair(self, a: str, b: str) -> float:
        ga, gb = self.grams(a), self.grams(b)
        dot = sum(v * gb.get(k, 0) for k, v in ga.items())
        na, nb = math.sqrt(sum(v * v for v in ga.values())), math.sqrt(sum(v * v for v in gb.values()))
        return dot / (na * nb) if na and nb else 0.0

    def matrix(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        return np.array([[self.pair(x, y) for y in b] for x in a], dtype=np.float64).reshape(len(a), len(b))


class EmbeddingSimilarity:
    """Cosine similarity of sentence embeddings from a local model folder (torch imported lazily).

    Args:
        path: a sentence-transformers folder (has ``modules.json``) or any HF encoder folder.
        device: torch device string; ``None`` picks CUDA when available.
    """

    def __init__(self, path: str | Path, device: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"similarity model folder {self.path} does not exist (nothing is downloaded)")
        self.name = f"embedding:{self.path.name}"
        self._encode: Callable[[list[str]], np.ndarray] = self._load(device)
        self._cache: dict[str, np.ndarray] = {}

    def _load(self, device: str | None) -> Callable[[list[str]], np.ndarray]:
        import torch  # noqa: F401 - fail early with a clear error when torch is missing

        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if (self.path / "modules.json").exists():
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                pass
            else:
                st = SentenceTransformer(str(self.path), device=dev, local_files_only=True)
                return lambda texts: np.asarray(st.encode(texts, convert_to_numpy=True), dtype=np.float64)
        from transformers import AutoModel, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        model = AutoModel.from_pretrained(str(self.path), local_files_only=True).to(dev).eval()

        def encode(texts: list[str]) -> np.ndarray:
            with torch.no_grad():
                batch = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=512).to(dev)
                hidden = model(**batch).last_hidden_state  # (B, T, D)
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            return pooled.float().cpu().numpy().astype(np.float64)

        return encode

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``len(texts) × D`` unit-norm embeddings (cached per text)."""
        todo = sorted({t for t in texts if t not in self._cache})
        for start in range(0, len(todo), 64):
            chunk = todo[start : start + 64]
            for t, v in zip(chunk, self._encode(chunk), strict=True):
                self._cache[t] = v / (np.linalg.norm(v) or 1.0)
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 1))

    def matrix(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        if not a or not b:
            return np.zeros((len(a), len(b)), dtype=np.float64)
        return np.clip(self.embed(a) @ self.embed(b).T, 0.0, 1.0)


SIMILARITIES: dict[str, Callable[[], PhraseSimilarity]] = {"token-f1": TokenF1, "char-trigram": CharTrigram}


def get_similarity(spec: str | None = None) -> PhraseSimilarity:
    """A registry name (``token-f1`` default, ``char-trigram``) or a local model folder."""
    if spec is None or spec in SIMILARITIES:
        return SIMILARITIES[spec or "token-f1"]()
    return EmbeddingSimilarity(spec)


__all__ = [
    "SIMILARITIES",
    "CharTrigram",
    "EmbeddingSimilarity",
    "PhraseSimilarity",
    "TokenF1",
    "get_similarity",
    "normalise_tokens",
]
