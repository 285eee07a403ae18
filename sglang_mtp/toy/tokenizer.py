"""A tiny word-level tokenizer for the toy task, built offline (no download).

Pieces: a word with its leading space (" apples"), one digit with or without a leading
space (" 4", "7": numbers are spelled digit by digit, which keeps arithmetic learnable),
or one other character ("." "," "?" ":" "\\n" ...). Decoding concatenates the pieces, so
``decode(encode(text)) == text`` for every toy text. Special tokens: <pad> 0, <s> 1 (BOS,
prepended by ``add_special_tokens``), </s> 2 (EOS), <unk> 3. The converter adds <MTP> later.
"""

from __future__ import annotations

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
PIECE_PATTERN = r" ?[A-Za-z]+| ?[0-9]| ?[^ A-Za-z0-9]| "


def _pieces(text: str) -> list:
    import re
    return re.findall(PIECE_PATTERN, text)


def build_tokenizer(texts):
    """A ``PreTrainedTokenizerFast`` whose vocabulary covers every piece of ``texts``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for text in texts:
        for piece in _pieces(text):
            vocab.setdefault(piece, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(PIECE_PATTERN), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>", clean_up_tokenization_spaces=False)
