"""Building CLIP tokenizers offline.

CLIP's tokenizer is a byte-level BPE whose vocabulary is derived from its merge list
(`bpe_simple_vocab_16e6.txt.gz` in OpenAI's release): the 256 byte symbols, the same with the
end-of-word marker `</w>`, one token per merge, then `<|startoftext|>` and `<|endoftext|>`.
`write_clip_tokenizer_files` writes that vocabulary as `vocab.json` + `merges.txt`, the files
`CLIPTokenizer.from_pretrained` reads on transformers 4.x and 5.x.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
CLIP_NUM_MERGES = 48894  # 49408 ids = 2 * 256 byte symbols + 48894 merges + 2 special tokens
CONTEXT_LENGTH = 77


def byte_symbols() -> list[str]:
    """The 256 printable characters byte-level BPE uses for the bytes 0..255, in vocabulary order.

    Printable latin-1 bytes stand for themselves; the others are mapped, in byte order, to the
    code points 256, 257, ...
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols = {byte: chr(byte) for byte in printable}
    next_code_point = 256
    for byte in range(256):
        if byte not in symbols:
            symbols[byte] = chr(next_code_point)
            next_code_point += 1
    return [symbols[byte] for byte in printable] + [symbols[byte] for byte in range(256) if byte not in printable]


def read_merges(bpe_path: str | Path, num_merges: int | None = CLIP_NUM_MERGES) -> list[tuple[str, str]]:
    """Merge pairs of a CLIP BPE file (`.txt` or `.txt.gz`; its first line is a header)."""
    opener = gzip.open if str(bpe_path).endswith(".gz") else open
    with opener(bpe_path, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")[1:]
    merges = [tuple(line.split()) for line in lines if line.strip()]
    if any(len(pair) != 2 for pair in merges):
        raise ValueError(f"{bpe_path}: every merge line must hold two symbols.")
    return merges[:num_merges] if num_merges is not None else merges


def clip_vocabulary(merges: list[tuple[str, str]]) -> dict[str, int]:
    symbols = byte_symbols()
    tokens = symbols + [symbol + END_OF_WORD for symbol in symbols] + ["".join(pair) for pair in merges]
    tokens += [START_TOKEN, END_TOKEN]
    return {token: index for index, token in enumerate(tokens)}


def write_clip_tokenizer_files(
    merges: list[tuple[str, str]], output_dir: str | Path, context_length: int = CONTEXT_LENGTH
) -> Path:
    """Writes `vocab.json`, `merges.txt` and `tokenizer_config.json` of a CLIP tokenizer."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    vocabulary = clip_vocabulary(merges)
    (output_dir / "vocab.json").write_text(json.dumps(vocabulary, ensure_ascii=False), encoding="utf-8")
    merge_lines = ["#version: 0.2"] + [" ".join(pair) for pair in merges]
    (output_dir / "merges.txt").write_text("\n".join(merge_lines) + "\n", encoding="utf-8")
    tokenizer_config = {
        "tokenizer_class": "CLIPTokenizer",
        "bos_token": START_TOKEN,
        "eos_token": END_TOKEN,
        "unk_token": END_TOKEN,
        "pad_token": END_TOKEN,
        "model_max_length": context_length,
        "do_lower_case": True,
    }
    (output_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2), encoding="utf-8")
    return output_dir


def build_clip_tokenizer(bpe_path: str | Path, output_dir: str | Path, context_length: int = CONTEXT_LENGTH):
    """A real CLIP tokenizer from OpenAI's BPE merge file, offline."""
    from transformers import CLIPTokenizer

    write_clip_tokenizer_files(read_merges(bpe_path), output_dir, context_length)
    return CLIPTokenizer.from_pretrained(str(output_dir))


# CLIP's words: letters, single digits, or runs of other symbols (after lower-casing).
WORD_PATTERN = re.compile(r"[^\W\d_]+|\d|[^\s\w]+|_+")


def _byte_to_symbol() -> dict[int, str]:
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    order = printable + [byte for byte in range(256) if byte not in printable]
    return dict(zip(order, byte_symbols()))


def learn_bpe_merges(texts: Iterable[str], num_merges: int = 2000, min_count: int = 2) -> list[tuple[str, str]]:
    """Learns CLIP-style BPE merges (byte symbols, `</w>` on the last symbol of a word) from texts.

    Deterministic: the most frequent pair wins, ties broken by the pair itself. Stops early when no
    pair occurs `min_count` times.
    """
    to_symbol = _byte_to_symbol()
    words = Counter(word for text in texts for word in WORD_PATTERN.findall(" ".join(text.lower().split())))
    vocabulary = {}
    for word, count in words.items():
        symbols = [to_symbol[byte] for byte in word.encode("utf-8")]
        symbols[-1] += END_OF_WORD
        vocabulary[tuple(symbols)] = count
    merges = []
    for _ in range(num_merges):
        pairs: Counter = Counter()
        for symbols, count in vocabulary.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best, count = min(pairs.items(), key=lambda item: (-item[1], item[0]))
        if count < min_count:
            break
        merges.append(best)
        vocabulary = {_merge(symbols, best): count for symbols, count in vocabulary.items()}
    return merges


def _merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    merged, index = [], 0
    while index < len(symbols):
        if index + 1 < len(symbols) and (symbols[index], symbols[index + 1]) == pair:
            merged.append(symbols[index] + symbols[index + 1])
            index += 2
        else:
            merged.append(symbols[index])
            index += 1
    return tuple(merged)


def build_tokenizer_from_texts(texts: Iterable[str], output_dir: str | Path, num_merges: int = 2000,
                               context_length: int = CONTEXT_LENGTH):  # fmt: skip
    """A CLIP-format tokenizer (vocab.json + merges.txt) learned from `texts`, offline."""
    from transformers import CLIPTokenizerFast

    write_clip_tokenizer_files(learn_bpe_merges(texts, num_merges), output_dir, context_length)
    return CLIPTokenizerFast.from_pretrained(str(output_dir))
