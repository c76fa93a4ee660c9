"""Open-vocabulary sentences for the synthetic corpus, sampled from a real English language model.

The built-in grammar of :mod:`.speech` has about 80 words: a model trained on it hears the same
few syllables in the same few contexts, and on recorded speech it misses the bilabials of words it
never heard (the /s p/ of "disposed", the /ng m/ of "young man"). The PyPI ``pocketsphinx`` wheel
ships CMU's US-English trigram language model (``en-us.lm.bin``, trained on general and
conversational text) and pronouncing dictionary: sentences drawn from its trigram distribution over
the dictionary's most frequent words have the words, word frequencies and word-boundary sound
sequences of English. They need not make sense: lip motion depends on the sounds.

Probabilities are asked through pocketsphinx's own ``NGramModel.prob`` (backed-off trigram
probabilities, about 1.5 us a call); the distribution of the next word after a history is kept
for the most recent ``_KEPT`` histories (64 KB each), so memory stays bounded on large corpora.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import numpy as np

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_START, _END = "<s>", "</s>"
_KEPT = 1024  # next-word distributions kept (least recently used dropped first)


def _model_dir() -> Path:
    import pocketsphinx

    path = Path(pocketsphinx.__file__).parent / "model" / "en-us"
    if not (path / "en-us.lm.bin").is_file() or not (path / "cmudict-en-us.dict").is_file():
        raise FileNotFoundError(f"pocketsphinx's English language model is missing from {path}: "
                                "pip install 'pocketsphinx>=5'")
    return path


class EnglishText:
    """Sentences drawn from pocketsphinx's English trigram model over its most frequent words.

    Args:
        vocabulary: how many of the dictionary's plain lower-case words (by unigram probability)
            may appear; the distribution is renormalised over them and the sentence end.
        temperature: > 1 flattens the distribution (rarer words and sequences), 1 keeps it.
    """

    def __init__(self, vocabulary: int = 8000, temperature: float = 1.2) -> None:
        from pocketsphinx import NGramModel

        folder = _model_dir()
        self.model = NGramModel.readfile(str(folder / "en-us.lm.bin"))
        with open(folder / "cmudict-en-us.dict", encoding="utf-8") as f:
            words = sorted({w for w in (line.split(maxsplit=1)[0] for line in f if line.strip())
                            if _WORD.fullmatch(w)})
        unigram = np.array([self.model.prob([w]) for w in words], np.float64)
        self.vocab = [words[i] for i in np.argsort(-unigram, kind="stable")[:vocabulary]] + [_END]
        self.temperature = temperature
        self._dist: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()

    def _distribution(self, history: tuple[str, str]) -> np.ndarray:
        """P(next word | the two previous words) over ``vocab``, float64 [V + 1], sums to 1."""
        if history in self._dist:
            self._dist.move_to_end(history)
            return self._dist[history]
        score = np.array([self.model.prob([w, history[1], history[0]]) for w in self.vocab], np.float64)
        p = np.exp((score - score.max()) * (np.log(1.0001) / self.temperature))  # log base 1.0001
        self._dist[history] = p / p.sum()
        if len(self._dist) > _KEPT:
            self._dist.popitem(last=False)
        return self._dist[history]

    def sentence(self, rng: np.random.Generator, min_words: int = 6, max_words: int = 14) -> str:
        """One sentence of ``min_words``..``max_words`` words, capitalised, with a full stop."""
        words, history = [], (_START, _START)
        while len(words) < max_words:
            p = self._distribution(history)
            if len(words) < min_words:  # no end before min_words
                p = p[:-1] / p[:-1].sum()
            word = self.vocab[int(rng.choice(len(p), p=p))]
            if word == _END:
                break
            words.append(word)
            history = (history[1], word)
        text = " ".join("I" + w[1:] if w == "i" or w.startswith("i'") else w for w in words)
        return text[0].upper() + text[1:] + "."


@lru_cache(maxsize=1)
def english_text() -> EnglishText:
    """The process-wide sentence source (the model is read once per process)."""
    return EnglishText()
