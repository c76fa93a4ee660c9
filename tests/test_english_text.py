"""Open-vocabulary corpus sentences from pocketsphinx's English language model."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from data_prep.synth import speech
from data_prep.synth.corpus import SynthConfig, clip_utterance
from data_prep.synth.texts import english_text
from data_prep.synth.visemes import strip_stress

def _grammar_words() -> set[str]:
    phrases = (speech._SUBJECTS + speech._VERBS + speech._ADJECTIVES + speech._NOUNS + speech._ENDINGS
               + ["two", "nine", "many", "some", "four"])
    return {w.lower() for p in phrases for w in p.split()}


def _diphones(sentences: list[str]) -> set[tuple[str, str]]:
    """Pairs of successive phonemes eSpeak NG produces for the sentences, across word borders."""
    out = set()
    for clause in speech.phonemize(" ".join(sentences)):
        seq = [strip_stress(a) for a, _ in clause if a.strip()]
        out |= set(zip(seq, seq[1:]))
    return out


def test_sentences_are_deterministic_and_bounded():
    text = english_text()
    first = [text.sentence(np.random.default_rng([4, k]), 6, 12) for k in range(30)]
    again = [text.sentence(np.random.default_rng([4, k]), 6, 12) for k in range(30)]
    assert first == again
    vocab = set(text.vocab)
    for s in first:
        words = s[:-1].split()
        assert s.endswith(".") and s[0].isupper() and 6 <= len(words) <= 12
        assert all(w.lower() in vocab for w in words)


def test_follows_the_language_model():
    """Word frequencies follow the model (not a uniform draw over the vocabulary), and the next
    word after a history follows pocketsphinx's own trigram probabilities."""
    text = english_text()
    rng = np.random.default_rng(0)
    counts = Counter(w.lower() for _ in range(60) for w in text.sentence(rng)[:-1].split())
    assert counts.most_common(1)[0][0] in set(text.vocab[:10])
    p = text._distribution(("<s>", "the"))
    i, j = text.vocab.index("first"), text.vocab.index("of")
    expected = (text.model.prob(["first", "the", "<s>"]) - text.model.prob(["of", "the", "<s>"])) * math.log(1.0001)
    assert math.log(p[i] / p[j]) == pytest.approx(expected / text.temperature, rel=1e-6)
    assert p.sum() == pytest.approx(1.0)


def test_open_vocabulary_covers_what_the_grammar_lacks():
    """The point of the module: many more words and sound sequences than the built-in grammar,
    e.g. the /s p/ of "disposed", which the grammar never says."""
    text, rng = english_text(), np.random.default_rng(1)
    lm = [text.sentence(rng) for _ in range(40)]
    grammar = [speech.random_sentence(np.random.default_rng([1, k])) for k in range(40)]
    lm_words = {w.lower() for s in lm for w in s[:-1].split()}
    assert len(lm_words) > 2.5 * len(_grammar_words())  # 40 sentences: ~300 words against 103
    assert len(lm_words - _grammar_words()) > 0.9 * len(lm_words)
    ours, theirs = _diphones(lm), _diphones(grammar)
    assert len(ours) >= 1.5 * len(theirs)
    assert ("s", "p") in ours and ("s", "p") not in theirs


def test_corpus_mixes_the_sources():
    """english_share 0 keeps the grammar (the corpora made before); 1 uses the model only."""
    grammar = _grammar_words()

    def words(share):
        cfg = SynthConfig(seed=2, min_seconds=2.0, max_seconds=3.5, english_share=share)
        return [{w.strip(".").lower() for w in clip_utterance(cfg, k, "en-us").text.split()} for k in range(3)]

    assert all(w <= grammar for w in words(0.0))
    assert all(len(w - grammar) > 0 for w in words(1.0))
