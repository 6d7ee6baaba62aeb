"""Caption metrics: BLEU-4 (sacrebleu), ROUGE-L (rouge-score) and CIDEr-D (pycocoevalcap), all on a 0-1 scale."""

from __future__ import annotations

import re
from collections.abc import Sequence

from . import Example, Metric, MetricResult, mean_of, register_metric
from ._optional import require

# Tokens pycocoevalcap's PTBTokenizer drops after tokenising (its PUNCTUATIONS, with brackets and quotes in the
# raw form this tokeniser leaves them in).
_PTB_DROP = {"''", "'", "``", "`", "-lrb-", "-rrb-", "-lcb-", "-rcb-", ".", "?", "!", ",", ":", "-", "--", "...",
             ";", "(", ")", "[", "]", "{", "}", '"'}
_CLITIC = re.compile(r"(?<=\w)(n't|'s|'re|'ve|'ll|'m|'d)\b")
_TOKEN = re.compile(r"n't|'(?:s|re|ve|ll|m|d)\b|\d+(?:[.,:]\d+)*|\w+(?:[-']\w+)*|\S")


def ptb_tokenize(text: str) -> str:
    """A Java-free stand-in for pycocoevalcap's PTBTokenizer (Stanford CoreNLP, ``-lowerCase``, punctuation dropped).

    Lower-cases, splits off clitics as PTB does ("don't" -> "do n't", "it's" -> "it 's"), keeps numbers ("0.96",
    "1,000") and hyphenated words whole, splits off other symbols ("100%" -> "100 %") and drops the punctuation
    tokens pycocoevalcap drops. It reproduces pix2struct's CIDEr test (128.6) but is not CoreNLP: rare cases
    (abbreviations, URLs, unicode quotes) may split differently.
    """
    text = _CLITIC.sub(r" \1", text.lower())
    return " ".join(t for t in _TOKEN.findall(text) if t not in _PTB_DROP)


def _bleu4(examples: Sequence[Example]) -> MetricResult:
    """BLEU-4 (Papineni et al. 2002) as sacrebleu computes it (Post 2018): default 13a tokenisation, case-sensitive.

    The corpus value is sacrebleu's corpus BLEU / 100 (not a mean of sentence scores); each sample's score is
    sacrebleu's sentence BLEU (exponential smoothing, effective order) / 100. Samples may have different numbers
    of references.
    """
    sacrebleu = require("sacrebleu", "sacrebleu")
    if not examples:
        return MetricResult(0.0, [])
    hypotheses = [e.prediction for e in examples]
    most = max(len(e.references) for e in examples)
    # sacrebleu takes one stream per reference position; None marks a sample with fewer references.
    streams = [[e.references[k] if k < len(e.references) else None for e in examples] for k in range(most)]
    corpus = sacrebleu.corpus_bleu(hypotheses, streams).score / 100
    scores: list[float | None] = [sacrebleu.sentence_bleu(e.prediction, list(e.references)).score / 100
                                  for e in examples]
    return MetricResult(corpus, scores)


def _rouge_l(examples: Sequence[Example]) -> MetricResult:
    """ROUGE-L F-measure (Lin 2004) from Google's ``rouge-score``, best reference per sample, mean over samples.

    No stemming; rouge-score's tokeniser keeps only ``[a-z0-9]`` runs after lower-casing, so text in other
    scripts scores 0.
    """
    rouge_scorer = require("rouge_score.rouge_scorer", "rouge-score")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    scores: list[float | None] = [scorer.score_multi(list(e.references), e.prediction)["rougeL"].fmeasure
                                  for e in examples]
    return MetricResult(mean_of(scores), scores)


def _cider(examples: Sequence[Example]) -> MetricResult:
    """CIDEr-D (Vedantam et al. 2015) from pycocoevalcap's ``Cider`` (n=4, sigma=6, clipped, x10 per sample).

    Reported as pycocoevalcap returns it (pix2struct's 128.6 is 1.286 here); text goes through
    :func:`ptb_tokenize` instead of the Java tokeniser. IDF comes from the references of the evaluated samples,
    so the score depends on the set: a single sample scores 0 (its log document count is 0).
    """
    cider = require("pycocoevalcap.cider.cider", "pycocoevalcap")
    refs = {str(i): [ptb_tokenize(r) for r in e.references] for i, e in enumerate(examples)}
    if not any(r for rs in refs.values() for r in rs):
        # pycocoevalcap fails on a corpus without any reference n-gram; nothing can match, so everything is 0.
        return MetricResult(0.0, [0.0] * len(examples))
    hyps = {str(i): [ptb_tokenize(e.prediction)] for i, e in enumerate(examples)}
    corpus, scores = cider.Cider().compute_score(refs, hyps)
    return MetricResult(float(corpus), [float(s) for s in scores])


register_metric(Metric("bleu4", _bleu4))
register_metric(Metric("rouge_l", _rouge_l))
register_metric(Metric("cider", _cider))
