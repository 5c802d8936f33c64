"""Caption metrics: BLEU@4, METEOR, ROUGE-L and CIDEr as the COCO caption evaluation computes them
(`pycocoevalcap`, the implementation captioning papers report, DeCap and CapDec included), and
attribute accuracy: how often a caption names the product's own tag of each entity.

`pycocoevalcap` tokenises with Stanford's PTB tokenizer and scores METEOR with METEOR 1.5, both
Java programs it ships: a Java runtime (`java` on the PATH) is needed. Install with
`pip install "e2-hf[captioning]"`.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence

from .captioner import CaptionerError

CAPTION_METRICS = ("bleu4", "meteor", "rouge_l", "cider")


def check_metrics_available() -> None:
    """Raises `CaptionerError` saying what to install when the caption metrics cannot run."""
    _scorer_classes()


def _scorers():
    tokenizer_class, (bleu, meteor, rouge, cider) = _scorer_classes()
    return tokenizer_class, {"bleu4": bleu(4), "meteor": meteor(), "rouge_l": rouge(), "cider": cider()}


def _scorer_classes():
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.meteor.meteor import Meteor
        from pycocoevalcap.rouge.rouge import Rouge
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    except ImportError:
        raise CaptionerError('caption metrics need pycocoevalcap: pip install "e2-hf[captioning]"') from None
    if shutil.which("java") is None:
        raise CaptionerError(
            "caption metrics need a Java runtime (java on the PATH): pycocoevalcap's tokenizer and METEOR are Java "
            "programs; e.g. apt-get install default-jre-headless"
        )
    return PTBTokenizer, (Bleu, Meteor, Rouge, Cider)


def caption_metrics(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus-level BLEU@4, METEOR, ROUGE-L and CIDEr of `predictions` (one per item) against each
    item's reference captions, after the PTB tokenizer (lower case, punctuation removed)."""
    if len(predictions) != len(references):
        raise CaptionerError(f"{len(predictions)} predictions for {len(references)} reference lists")
    if not predictions:
        raise CaptionerError("no captions to score")
    for position, item in enumerate(references):
        if not item:
            raise CaptionerError(f"item {position + 1} has no reference caption")
    tokenizer_class, scorers = _scorers()
    tokenizer = tokenizer_class()
    keys = [str(position) for position in range(len(predictions))]
    candidates = tokenizer.tokenize({key: [{"caption": text}] for key, text in zip(keys, predictions)})
    truths = tokenizer.tokenize({key: [{"caption": text} for text in item] for key, item in zip(keys, references)})
    scores = {}
    for name, scorer in scorers.items():
        score, _ = scorer.compute_score(truths, candidates)
        scores[name] = float(score[3] if name == "bleu4" else score)  # Bleu(4) gives BLEU@1..4
    return scores


def _words(text: str) -> str:
    """Lower case, letters and digits only, single spaces: "100% Cotton" and "100 % cotton" agree."""
    return " ".join(re.findall(r"[0-9a-z]+", text.lower()))


def named_values(caption: str, known: Sequence[str]) -> set[str]:
    """The values of `known` that `caption` names as whole words (case and punctuation ignored),
    leaving out one that is only part of a longer value named (Aurel in "Aurel Studio")."""
    words = f" {_words(caption)} "
    padded = {value: f" {_words(value)} " for value in known}  # each value's words, once
    named = {value for value, phrase in padded.items() if phrase.strip() and phrase in words}
    return {value for value in named
            if not any(other != value and padded[value] in padded[other] for other in named)}  # fmt: skip


def attribute_accuracy(captions: Sequence[str], values: Sequence[Mapping[str, Sequence[str]]],
                       entities: Sequence[str]) -> dict[str, float | None]:  # fmt: skip
    """Per entity: the share of captions naming one of their product's own values of it, among the
    values of the products scored (products without that tag are left out; `None` where no product
    has it). A caption naming another product's value of the entity counts as wrong."""
    accuracy: dict[str, float | None] = {}
    for entity in entities:
        known = sorted({value for item in values for value in item.get(entity, ())})
        judged = [bool(named_values(caption, known) & set(item[entity]))
                  for caption, item in zip(captions, values) if item.get(entity)]  # fmt: skip
        accuracy[entity] = sum(judged) / len(judged) if judged else None
    return accuracy
