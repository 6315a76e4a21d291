"""Phrase similarities: the lexical defaults by hand, and a local (random-weight) encoder folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geopixel.eval.similarity import CharTrigram, TokenF1, get_similarity, normalise_tokens


def test_token_f1_by_hand() -> None:
    sim = TokenF1()
    assert normalise_tokens("The Small Vehicles") == ["small", "vehicle"]
    assert sim.pair("tennis court-1", "tennis court-2") == pytest.approx(2 / 3)
    assert sim.pair("small vehicles", "vehicle") == pytest.approx(2 / 3)
    assert sim.pair("plane", "a large white plane") == pytest.approx(0.5)
    assert sim.pair("harbor", "ship") == 0.0
    m = sim.matrix(["a", "b c"], ["b", "c", "d"])
    assert m.shape == (2, 3) and m[1, 0] == pytest.approx(2 / 3)


def test_char_trigram() -> None:
    sim = CharTrigram()
    assert sim.pair("storage tank", "storage tanks") == pytest.approx(1.0)  # plural stripped
    assert 0.0 < sim.pair("storage tank-1", "storage tank-2") < 1.0
    assert get_similarity("char-trigram").name == "char-trigram" and get_similarity(None).name == "token-f1"


def test_embedding_model_from_a_local_folder(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    # a tiny BERT with RANDOM weights, saved locally: exercises the loading and pooling path only
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "tennis", "court", "plane", "small", "vehicle", "-", "1"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = transformers.BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    cfg = transformers.BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32)
    transformers.BertModel(cfg).save_pretrained(tmp_path / "enc")
    tok.save_pretrained(tmp_path / "enc")
    sim = get_similarity(str(tmp_path / "enc"))
    m = sim.matrix(["tennis court", "plane"], ["tennis court", "small vehicle", "plane"])
    assert m.shape == (2, 3)
    assert m[0, 0] == pytest.approx(1.0, abs=1e-5) and m[1, 2] == pytest.approx(1.0, abs=1e-5)
    assert np.all((m >= 0) & (m <= 1))
    with pytest.raises(FileNotFoundError):
        get_similarity(str(tmp_path / "missing"))
