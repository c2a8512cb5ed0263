"""Tokenizer for GGUF models: HuggingFace `tokenizers` set up to match llama.cpp.

llama.cpp's src/llama-vocab.cpp is the reference: the pre-tokenizer regexes that
`tokenizer.ggml.pre` names, SPM merges ordered by the merged piece's score,
user-defined tokens matched in text always and control tokens only when parsing
specials, the end-of-generation tokens it detects by name, and its token -> piece
mapping for decoding.

Known gaps, none of which the golden data exercises: llama.cpp matches special
tokens longest-first over the whole text where `tokenizers` matches leftmost-longest;
SPM pieces with equal scores (only special ones in practice) merge in vocab order
rather than leftmost-first; and decode() skips llama.cpp's detokenize() extras (the
first-token space strip and the clean_spaces pass), matching what its server streams.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Iterable, Mapping

from tokenizers import AddedToken, Regex
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, normalizers, pre_tokenizers

SPACE = "\u2581"  # SentencePiece's visible space, "▁"


class TokenType(IntEnum):
    """Values of `tokenizer.ggml.token_type`."""

    UNDEFINED = 0
    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


@dataclass(frozen=True)
class PreTokenizer:
    """How llama.cpp splits text before byte-level BPE for one `tokenizer.ggml.pre` family."""

    regexes: tuple[str, ...]  # applied in turn, each splitting the pieces the previous one left
    add_bos: bool = False  # llama.cpp's default when tokenizer.ggml.add_bos_token is absent
    ignore_merges: bool = False  # a pre-token that is a whole vocab entry is not merged up


# The regexes are llama.cpp's own (llm_tokenizer_bpe), which rewrites the upstream
# tokenizer.json patterns for std::regex: e.g. (?i:'s) becomes '[sS], \p{Lu} becomes
# "a letter other than a-z". Following llama.cpp rather than upstream is the point.
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_LLAMA3 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_QWEN2 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_UPPER, _LOWER = r"((?=[\p{L}])([^a-z]))", r"((?=[\p{L}])([^A-Z]))"
_GPT4O = (rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+{_CONTRACTIONS}?"
          rf"|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*{_CONTRACTIONS}?"
          r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_TEKKEN = (rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*"
           r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_DEEPSEEK_LLM_LETTERS = (
    "A-Za-z\u00b5À-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗ"
    "ὙὛὝὟ-\u1f7dᾀ-ᾴᾶ-ᾼ\u1fbeῂ-ῄῆ-ῌῐ-\u1fd3ῖ-\u1fdbῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u2126ℨ\u212a-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳ"
    "Ꙁ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃")
_CJK = "[一-龥ࠀ-一가-퟿]+"

_FAMILIES: tuple[tuple[tuple[str, ...], PreTokenizer], ...] = (
    (("default",),
     PreTokenizer((r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", "[0-9][0-9][0-9]"))),
    (("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
      "jina-v5-nano"),
     PreTokenizer((_LLAMA3,), add_bos=True, ignore_merges=True)),
    (("dbrx", "smaug-bpe"), PreTokenizer((_LLAMA3,))),
    (("deepseek-llm",),
     PreTokenizer(("[\r\n]", rf"\s?[{_DEEPSEEK_LLM_LETTERS}]+", r"\s?[!-/:-~！-／：-～‘-‟　-。]+", r"\s+$",
                   _CJK, r"\p{N}+"))),
    (("deepseek-coder",), PreTokenizer(("[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", _CJK, r"\p{N}"))),
    (("deepseek-v3", "hunyuan-dense", "joyai-llm", "hy_v4"),
     PreTokenizer((r"\p{N}{1,3}", "[一-龥぀-ゟ゠-ヿ]+",
                   r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"""
                   r"""| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""))),
    (("falcon",), PreTokenizer((r"[\p{P}\$\+<=>\^~\|`]+", _GPT2, "[0-9][0-9][0-9]"))),
    (("gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum",
      "modern-bert", "exaone4", "mpt", "olmo", "jais", "trillion", "granite-docling"),
     PreTokenizer((_GPT2,))),
    (("starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b", "mellum2"),
     PreTokenizer((r"\p{N}", _GPT2))),
    (("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan", "solar-open"),
     PreTokenizer((_QWEN2,))),
    (("bloom", "poro-chat", "gpt3-finnish"), PreTokenizer((r" ?[^(\s|.,!?…。，、।۔،)]+",))),
    (("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"), PreTokenizer((_GPT4O,))),
    (("tekken",), PreTokenizer((_TEKKEN,), add_bos=True, ignore_merges=True)),
)
PRE_TOKENIZERS: dict[str, PreTokenizer] = {name: spec for names, spec in _FAMILIES for name in names}


def pre_tokenizer(name: str) -> PreTokenizer:
    try:
        return PRE_TOKENIZERS[name]
    except KeyError:
        raise ValueError(f"unsupported tokenizer.ggml.pre {name!r}: kt has not ported llama.cpp's "
                         f"pre-tokenizer for it (supported: {', '.join(sorted(PRE_TOKENIZERS))})") from None


# Token texts llama.cpp treats as end of generation (llama_vocab::impl::load).
EOG_NAMES = frozenset({
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~[",
})
# Fill-in-the-middle tokens it detects by name; pad, repo and file-separator ones also end generation.
FIM_NAMES = {
    "pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
            "<|code_prefix|>", "<|prefix|>"),
    "suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
            "<|code_suffix|>", "<|suffix|>"),
    "mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
            "<|code_middle|>", "<|middle|>"),
    "pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "sep": ("<|file_sep|>",),
}
# gpt-oss: llama.cpp always renders these and matches them in text like user-defined tokens.
ALWAYS_RENDERED = frozenset({"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"})


@dataclass(frozen=True)
class Vocab:
    """The tokenizer part of GGUF metadata, with llama.cpp's load-time fix-ups applied."""

    model: str  # "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    tokens: list[str]
    types: list[TokenType]
    scores: list[float]
    merges: list[str]
    pre: PreTokenizer | None  # gpt2 only
    bos_id: int | None
    eos_id: int | None
    unk_id: int | None
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    eog_ids: frozenset[int]
    chat_template: str | None

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> Vocab:
        model = meta.get("tokenizer.ggml.model")
        if model not in ("gpt2", "llama"):
            raise ValueError(f"unsupported tokenizer.ggml.model {model!r} (kt supports 'gpt2' and 'llama')")
        tokens = [t or f"[EMPTY_{i}]" for i, t in enumerate(meta["tokenizer.ggml.tokens"])]
        n = len(tokens)
        types = [TokenType(t) if 0 <= t <= 6 else TokenType.UNDEFINED
                 for t in meta.get("tokenizer.ggml.token_type", [TokenType.NORMAL] * n)]
        pre = pre_tokenizer(meta.get("tokenizer.ggml.pre") or "default") if model == "gpt2" else None
        # llama.cpp's defaults when the keys are missing
        ids = {"bos": 1, "eos": 2, "unk": 0} if model == "llama" else {"bos": 11, "eos": 11, "unk": None}
        for name in ("bos", "eos", "unk"):
            ids[name] = meta.get(f"tokenizer.ggml.{name}_token_id", ids[name])
            if ids[name] is not None and not 0 <= ids[name] < n:
                ids[name] = None
        eog_ids = _adjust_types_and_find_eog(tokens, types, meta, ids["eos"])
        return cls(
            model=model, tokens=tokens, types=types,
            scores=list(meta.get("tokenizer.ggml.scores", [0.0] * n)),
            merges=list(meta.get("tokenizer.ggml.merges", [])),
            pre=pre, bos_id=ids["bos"], eos_id=ids["eos"], unk_id=ids["unk"],
            add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", model == "llama" or pre.add_bos)),
            add_eos=bool(meta.get("tokenizer.ggml.add_eos_token", False)),
            add_space_prefix=bool(meta.get("tokenizer.ggml.add_space_prefix", model == "llama")),
            eog_ids=eog_ids,
            chat_template=meta.get("tokenizer.chat_template"),
        )


def _adjust_types_and_find_eog(tokens: list[str], types: list[TokenType], meta: Mapping[str, Any],
                               eos_id: int | None) -> frozenset[int]:
    """Mutate `types` as llama.cpp does at load time and return its end-of-generation ids."""
    by_text = {t: i for i, t in enumerate(tokens)}

    def key_or_name(key: str, names: Iterable[str]) -> int | None:
        if f"tokenizer.ggml.{key}_token_id" in meta:
            return meta[f"tokenizer.ggml.{key}_token_id"]
        found = [by_text[t] for t in names if t in by_text]
        for i in found:  # a detected token that was not control-typed is a conversion bug: fix it
            types[i] = TokenType.CONTROL
        return min(found, default=None)

    eog = {i for t, i in by_text.items() if t in EOG_NAMES}
    for i in eog:
        types[i] = TokenType.CONTROL
    for kind, names in FIM_NAMES.items():
        found = key_or_name(f"fim_{kind}", names)
        if kind in ("pad", "rep", "sep") and found is not None:
            eog.add(found)
    eog |= {meta[f"tokenizer.ggml.{k}_token_id"] for k in ("eot", "eom")
            if f"tokenizer.ggml.{k}_token_id" in meta}
    if eos_id is not None:
        eog.add(eos_id)
    for t in ALWAYS_RENDERED & by_text.keys():
        types[by_text[t]] = TokenType.USER_DEFINED
    texts = {tokens[i] for i in eog}
    # harmony-style vocabularies end a message with <|end|> but only stop on <|return|>/<|call|>
    if "<|end|>" in texts and texts & {"<|call|>", "<|calls|>"} and texts & {"<|return|>", "<|flush|>"}:
        eog.discard(by_text["<|end|>"])
        types[by_text["<|end|>"]] = TokenType.USER_DEFINED
    if "<|tool_response>" in texts and "</s>" in texts:  # gemma4: </s> is ordinary text
        eog.discard(by_text["</s>"])
        types[by_text["</s>"]] = TokenType.NORMAL
    return frozenset(eog)


class Tokenizer:
    """Encode and decode text exactly as llama.cpp does for a GGUF model."""

    def __init__(self, vocab: Vocab):
        self.vocab = vocab
        self._backend = _spm_backend(vocab) if vocab.model == "llama" else _bpe_backend(vocab)
        self._add_special_tokens(vocab)
        # encode_special_tokens is backend state, so set-and-encode must not interleave
        self._lock = threading.Lock()
        self._pieces = [_piece(t, ty, vocab.model) for t, ty in zip(vocab.tokens, vocab.types)]
        self._visible_pieces = [b"" if ty in (TokenType.CONTROL, TokenType.UNKNOWN) else p
                                for p, ty in zip(self._pieces, vocab.types)]

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> Tokenizer:
        return cls(Vocab.from_metadata(meta))

    def _add_special_tokens(self, vocab: Vocab) -> None:
        def added(kinds: tuple[TokenType, ...], special: bool) -> list[AddedToken]:
            return [AddedToken(t, special=special, normalized=False)
                    for t, ty in zip(vocab.tokens, vocab.types) if ty in kinds]

        # Both kinds are matched before the model sees the text; special ones only when parse_special.
        self._backend.add_tokens(added((TokenType.USER_DEFINED,), special=False))
        self._backend.add_special_tokens(added((TokenType.CONTROL, TokenType.UNKNOWN), special=True))

    def encode(self, text: str, add_special_tokens: bool = False, parse_special: bool = True) -> list[int]:
        """Token ids for `text`; BOS/EOS are added when the model asks for them and
        `add_special_tokens` is set; control tokens written in the text become single
        tokens only when `parse_special` is set."""
        with self._lock:
            self._backend.encode_special_tokens = not parse_special
            ids = self._backend.encode(text, add_special_tokens=False).ids
        if add_special_tokens and self.vocab.add_bos and self.bos_id is not None:
            ids.insert(0, self.bos_id)
        if add_special_tokens and self.vocab.add_eos and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    def token_bytes(self, token_id: int, skip_special_tokens: bool = True) -> bytes:
        """The bytes a token stands for; control and unknown tokens are b"" when skipped."""
        return (self._visible_pieces if skip_special_tokens else self._pieces)[token_id]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        # Concatenated pieces, as llama.cpp streams them: no leading-space strip, no clean-up.
        table = self._visible_pieces if skip_special_tokens else self._pieces
        return b"".join(table[i] for i in ids).decode("utf-8", errors="replace")

    @property
    def vocab_size(self) -> int:
        return len(self.vocab.tokens)

    @property
    def bos_id(self) -> int | None:
        return self.vocab.bos_id

    @property
    def eos_id(self) -> int | None:
        return self.vocab.eos_id

    @property
    def eog_ids(self) -> frozenset[int]:
        return self.vocab.eog_ids

    @property
    def add_bos(self) -> bool:
        return self.vocab.add_bos

    @property
    def chat_template(self) -> str | None:
        return self.vocab.chat_template

    @property
    def bos_token(self) -> str | None:
        return None if self.bos_id is None else self.vocab.tokens[self.bos_id]

    @property
    def eos_token(self) -> str | None:
        return None if self.eos_id is None else self.vocab.tokens[self.eos_id]


def _bpe_backend(vocab: Vocab) -> HFTokenizer:
    """Byte-level BPE: regex splits as llama.cpp, then GPT-2's byte -> char mapping, then merges."""
    table = {t: i for i, t in enumerate(vocab.tokens)}
    merges = []
    for m in vocab.merges:
        cut = m.find(" ", 1)  # as llama.cpp: a merge's first half may itself be " "
        pair = (m[:cut], m[cut + 1:])
        # llama.cpp never applies a merge it cannot reach; `tokenizers` refuses to load one
        if cut > 0 and pair[0] in table and pair[1] in table and pair[0] + pair[1] in table:
            merges.append(pair)
    backend = HFTokenizer(models.BPE(table, merges, ignore_merges=vocab.pre.ignore_merges))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in vocab.pre.regexes]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return backend


def _spm_backend(vocab: Vocab) -> HFTokenizer:
    """SentencePiece as llama.cpp runs it: spaces become "▁", the adjacent pair whose
    concatenation is the highest-scoring vocab entry merges first, and characters
    outside the vocab fall back to <0xXX> byte tokens."""
    table = {t: i for i, t in enumerate(vocab.tokens)}
    unk = None if vocab.unk_id is None else vocab.tokens[vocab.unk_id]
    backend = HFTokenizer(models.BPE(table, _spm_merges(vocab.tokens, vocab.scores, table),
                                     unk_token=unk, byte_fallback=True))
    # llama.cpp prefixes a space to every text fragment between special tokens; so does
    # a normalizer, which runs on each fragment separately.
    steps = [normalizers.Prepend(SPACE)] if vocab.add_space_prefix else []
    backend.normalizer = normalizers.Sequence(steps + [normalizers.Replace(" ", SPACE)])
    return backend


def _spm_merges(tokens: list[str], scores: list[float], table: dict[str, int]) -> list[tuple[str, str]]:
    """Every split of a vocab entry into two vocab entries, best-scoring result first.

    BPE applying these in rank order picks the same pair as llama.cpp's bigram queue
    whenever scores differ; sentencepiece models give normal tokens distinct scores."""
    found = []
    for piece_id, piece in enumerate(tokens):
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in table and right in table:
                found.append((-scores[piece_id], piece_id, left, right))
    found.sort(key=lambda m: (m[0], m[1]))
    return [(left, right) for _, _, left, right in found]


def _byte_decoder() -> dict[int, int]:
    """GPT-2's byte-level alphabet inverted, as a str.translate table: char -> byte value."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    shifted = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + shifted)
            shifted += 1
    return {c: b for b, c in zip(printable, chars)}


_BYTE_DECODER = _byte_decoder()


def _piece(text: str, kind: TokenType, model: str) -> bytes:
    """llama.cpp's token_to_piece with special=true."""
    if kind in (TokenType.CONTROL, TokenType.UNKNOWN, TokenType.USER_DEFINED):
        return text.encode()
    if kind == TokenType.BYTE:
        if len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
            return bytes([int(text[3:5], 16)])
        return text.encode()
    if kind != TokenType.NORMAL:
        return b""  # unused and undefined tokens print nothing
    if model == "llama":
        return text.replace(SPACE, " ").encode()
    try:
        return text.translate(_BYTE_DECODER).encode("latin-1")
    except UnicodeEncodeError:  # not byte-level text; llama.cpp prints a marker, we keep the text
        return text.encode()
