"""`train_captioner`: a decoder and prefix mapping learned from a catalog's product texts alone.

The backbone (an E2 or CLIP-FT folder) stays frozen: it only embeds the texts, once, before
training. The decoder is a transformers causal LM: a Hub model or folder given as `decoder` (e.g.
`gpt2`, with its own tokenizer), or, by default, a small GPT-2 trained from scratch that writes with
a byte-level BPE learnt from the training texts.
"""

from __future__ import annotations

import math
import random
import shutil
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data import open_catalog
from ..evaluation.embedding import load_for_inference
from ..local_paths import portable_name
from ..locking import LockHeldError, exclusive_lock
from ..modeling import E2CLIPEmbedder, E2CLIPModel, E2CLIPProcessor
from ..search.index import model_fingerprint
from .arguments import CaptionerTrainingArguments
from .captioner import CONFIG_NAME, END_TOKEN, CaptionerConfig, CaptionerError, E2Captioner, load_decoder


def catalog_texts(processor: E2CLIPProcessor, data_spec: str, keep_html: bool = False,
                  tag_separators: Sequence[str] = ()) -> list[str]:  # fmt: skip
    """The product texts of a catalog (tags and description, the backbone's field order): the
    captions the decoder learns to write. Images are not read."""
    catalog = open_catalog(data_spec, keep_html=keep_html, tag_separators=tag_separators)
    texts = [processor.build_product_text(product.description, product.tags) for product in catalog.products]
    if not texts:
        raise CaptionerError(f"{data_spec} has no products: a captioner needs texts to learn from")
    return texts


def corpus_tokenizer(texts: Sequence[str], vocab_size: int):
    """A byte-level BPE (GPT-2's scheme) learnt from the training texts: it writes back exactly what
    it reads (case, digits and punctuation), which CLIP's lower-casing tokenizer does not."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=[END_TOKEN],
                            show_progress=False)  # fmt: skip
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token=END_TOKEN, pad_token=END_TOKEN,
                                   bos_token=END_TOKEN)  # fmt: skip


def small_decoder(tokenizer, width: int, layers: int, heads: int, positions: int):
    """A GPT-2 of the given size, randomly initialised, over `tokenizer`'s vocabulary."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=positions, n_embd=width, n_layer=layers, n_head=heads,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    return GPT2LMHeadModel(config)


def build_decoder(args: CaptionerTrainingArguments, texts: Sequence[str]):
    """`(decoder, tokenizer)`: the causal LM named by `args.decoder` with its tokenizer, or a small
    GPT-2 from scratch with a tokenizer learnt from `texts`. No code from a model repo runs."""
    if args.decoder is None:
        tokenizer = corpus_tokenizer(texts, args.decoder_vocab_size)
        positions = args.prefix_length + args.max_caption_tokens
        return small_decoder(
            tokenizer, args.decoder_width, args.decoder_layers, args.decoder_heads, positions
        ), tokenizer
    return load_decoder(args.decoder)


def embed_corpus(model: E2CLIPModel, processor: E2CLIPProcessor, texts: Sequence[str], device) -> torch.Tensor:
    """`[texts, dim]` L2-normalised embeddings from the frozen backbone (a progress bar for many)."""
    embedder = E2CLIPEmbedder(model, processor, device=device, batch_size=256, progress=True)
    return embedder.embed_texts(list(texts))


def unique_rows(texts: Sequence[str], embeddings: torch.Tensor) -> torch.Tensor:
    """One embedding per distinct text: DeCap's memory."""
    first = {}
    for position, text in enumerate(texts):
        first.setdefault(text, position)
    return embeddings[sorted(first.values())].contiguous()


def train_captioner(args: CaptionerTrainingArguments, log=print) -> dict:
    """Trains and saves a captioner to `args.output_dir`; returns a summary (losses per epoch).
    The output is checked first (not another kind of folder, writable, no other run writing it);
    a second run into the same folder while one trains is refused."""
    output = Path(args.output_dir)
    if output.is_file() or (output.is_dir() and any(output.iterdir()) and not (output / CONFIG_NAME).is_file()):
        raise CaptionerError(f"{output} exists and is not a captioner folder: choose a new --output-dir "
                             "(a captioner folder there would be replaced)")  # fmt: skip
    with _output_lock(output):
        return _train(args, output, log)


@contextmanager
def _output_lock(output: Path) -> Iterator[None]:
    """Holds `.<name>.lock` beside `output` for the whole run: creating it checks, before any
    training, that the folder can be written; a run that finds it held is refused."""
    lock = output.with_name(f".{output.name}.lock")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        lock.touch()
    except OSError as error:
        raise CaptionerError(f"{output} cannot be written ({error.strerror or error}): choose a writable "
                             "--output-dir") from None  # fmt: skip
    with ExitStack() as held:
        try:
            held.enter_context(exclusive_lock(lock, wait=False))
        except LockHeldError:
            raise CaptionerError(f"another e2-hf train-captioner is writing {output}; wait for it to finish or "
                                 "choose another --output-dir") from None  # fmt: skip
        yield


def _train(args: CaptionerTrainingArguments, output: Path, log) -> dict:
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    model, processor, device, _ = load_for_inference(args.model, args.device)
    texts = catalog_texts(processor, args.train_data, args.keep_html, args.tag_separators)
    embeddings = embed_corpus(model, processor, texts, device)  # [texts, dim], on the CPU
    decoder, tokenizer = build_decoder(args, texts)
    config = CaptionerConfig(
        recipe=args.recipe, embedding_dim=embeddings.shape[1], prefix_length=args.prefix_length,
        backbone_name=portable_name(str(args.model)), backbone_fingerprint=model_fingerprint(model),
        noise_variance=args.noise_variance, memory_temperature=args.memory_temperature,
        max_caption_tokens=args.max_caption_tokens,
    )  # fmt: skip
    memory = unique_rows(texts, embeddings) if args.recipe == "decap" else None
    captioner = E2Captioner(config, decoder, tokenizer, memory).to(device).train()
    history = fit(captioner, texts, embeddings, args, device)
    temporary = output.with_name(f".{output.name}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    captioner.save_pretrained(temporary)
    shutil.rmtree(output, ignore_errors=True)
    temporary.rename(output)
    log(f"captioner ({args.recipe}) saved to {output}: {len(texts)} texts, final loss {history[-1]:.3f}")
    return {"recipe": args.recipe, "texts": len(texts), "loss_per_epoch": history, "output_dir": str(output)}


def fit(captioner: E2Captioner, texts: Sequence[str], embeddings: torch.Tensor,
        args: CaptionerTrainingArguments, device) -> list[float]:  # fmt: skip
    """AdamW with a linear warm-up and cosine decay over shuffled batches; mean loss per epoch."""
    from transformers import get_cosine_schedule_with_warmup

    optimizer = torch.optim.AdamW(captioner.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(texts) / args.batch_size)
    total = steps_per_epoch * args.epochs
    schedule = get_cosine_schedule_with_warmup(optimizer, min(args.warmup_steps, total // 5), total)
    generator = torch.Generator().manual_seed(args.seed)
    history = []
    progress = tqdm(total=total, desc=f"training the {args.recipe} captioner", unit="step")
    for _ in range(args.epochs):
        order = torch.randperm(len(texts), generator=generator).tolist()
        losses = []
        for start in range(0, len(order), args.batch_size):
            rows = order[start : start + args.batch_size]
            input_ids, mask = captioner.caption_token_ids([texts[row] for row in rows])
            loss = captioner.loss(embeddings[rows].to(device), input_ids.to(device), mask.to(device))
            if not torch.isfinite(loss):
                raise CaptionerError(f"the captioner's loss became {loss.item()}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(captioner.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            progress.update()
        history.append(sum(losses) / len(losses))
        progress.set_postfix(loss=f"{history[-1]:.3f}")
    progress.close()
    captioner.eval()
    return history
