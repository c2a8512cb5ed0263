"""Tokenizer, detokenizer and chat template against llama.cpp's outputs (tests/golden)."""
from pathlib import Path

import pytest

from kt.gguf.chat_template import ChatTemplate, ChatTemplateError
from kt.gguf.detokenizer import IncrementalDetokenizer
from kt.gguf.reader import GGUFFile
from kt.gguf.tokenizer import _BYTE_DECODER, PRE_TOKENIZERS, Tokenizer, Vocab


def read_metadata(path: Path) -> dict:
    """GGUF key -> Python value (kt's reader; test_reader checks it against gguf.GGUFReader)."""
    return GGUFFile(path).metadata


@pytest.fixture(scope="module")
def smollm2(smollm2_path) -> Tokenizer:
    return Tokenizer.from_metadata(read_metadata(smollm2_path))


@pytest.fixture(scope="module")
def gemma3(gemma3_path) -> Tokenizer:
    return Tokenizer.from_metadata(read_metadata(gemma3_path))


@pytest.fixture(params=["smollm2", "gemma3"])
def model(request) -> tuple[Tokenizer, dict]:
    """Each model's tokenizer with its golden file."""
    name = request.param
    return request.getfixturevalue(name), request.getfixturevalue(f"{name}_golden")


def test_special_ids_match_llama_cpp(model):
    tok, golden = model
    assert tok.vocab_size == golden["n_vocab"]
    assert (tok.bos_id, tok.eos_id) == (golden["bos_id"], golden["eos_id"])
    assert str(tok.add_bos).lower() == golden["add_bos"]
    assert tok.eos_id in tok.eog_ids


def test_tokenize_matches_llama_cpp(model):
    tok, golden = model
    for case in golden["tokenize"]:
        assert tok.encode(case["text"], parse_special=False) == case["ids"], case["text"]
        assert tok.encode(case["text"], parse_special=True) == case["ids_special"], case["text"]


def test_decode_matches_llama_cpp(model):
    tok, golden = model
    for seq in golden["sequences"]:
        assert tok.decode(seq["greedy_ids"]) == seq["greedy_text"]


def test_smollm2_chat_prompt_matches_llama_cpp(smollm2, smollm2_golden):
    template = ChatTemplate.from_tokenizer(smollm2)
    for seq in smollm2_golden["sequences"]:
        rendered = template.render([{"role": "user", "content": seq["prompt"]}], add_generation_prompt=True)
        assert rendered == seq["rendered"]
        assert smollm2.encode(rendered, add_special_tokens=True, parse_special=True) == seq["prompt_ids"]


def test_gemma3_prompt_gets_bos(gemma3, gemma3_golden):
    for seq in gemma3_golden["sequences"]:
        assert gemma3.encode(seq["prompt"], add_special_tokens=True) == seq["prompt_ids"]
        assert seq["prompt_ids"][0] == gemma3.bos_id


def test_end_of_generation_tokens(smollm2, gemma3):
    im_end, end_of_turn = smollm2.encode("<|im_end|>"), gemma3.encode("<end_of_turn>")
    assert im_end == [2] and im_end[0] in smollm2.eog_ids
    assert end_of_turn == [106] and end_of_turn[0] in gemma3.eog_ids
    assert smollm2.encode("<|endoftext|>")[0] in smollm2.eog_ids


def test_control_tokens_are_skipped_unless_asked(smollm2):
    ids = smollm2.encode("<|im_start|>user\nhi<|im_end|>")
    assert smollm2.decode(ids) == "user\nhi"
    assert smollm2.decode(ids, skip_special_tokens=False) == "<|im_start|>user\nhi<|im_end|>"
    assert smollm2.token_bytes(ids[0]) == b""
    assert smollm2.token_bytes(ids[0], skip_special_tokens=False) == b"<|im_start|>"


def test_token_bytes_undo_the_vocab_encodings(smollm2, gemma3):
    assert smollm2.token_bytes(smollm2.encode(" world")[0]) == b" world"  # "Ġworld"
    assert gemma3.token_bytes(gemma3.encode(" world")[0]) == b" world"  # "▁world"
    assert gemma3.token_bytes(gemma3.vocab.tokens.index("<0xF0>")) == b"\xf0"


def test_incremental_detokenizer_matches_decode(model):
    tok, golden = model
    texts = [seq["greedy_ids"] for seq in golden["sequences"]]
    texts += [case["ids_special"] for case in golden["tokenize"]]
    for ids in texts:
        detok = IncrementalDetokenizer(tok)
        pieces = [detok.add(i) for i in ids] + [detok.flush()]
        assert "".join(pieces) == tok.decode(ids)
        for piece in pieces:
            piece.encode("utf-8")  # no lone surrogates
            assert "\ufffd" not in piece


def test_incremental_detokenizer_holds_back_partial_characters(gemma3):
    rocket = [gemma3.vocab.tokens.index(f"<0x{b:02X}>") for b in "🚀".encode()]
    detok = IncrementalDetokenizer(gemma3)
    assert [detok.add(i) for i in rocket] == ["", "", "", "🚀"]
    assert detok.flush() == ""

    detok = IncrementalDetokenizer(gemma3)
    assert [detok.add(i) for i in rocket[:2]] == ["", ""]
    assert detok.flush() == "\ufffd"  # the sequence ended mid-character


def test_unknown_pre_tokenizer_is_named():
    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "no-such-pre",
            "tokenizer.ggml.tokens": ["a", "b"], "tokenizer.ggml.merges": []}
    with pytest.raises(ValueError, match="no-such-pre"):
        Vocab.from_metadata(meta)


@pytest.mark.parametrize("pre", sorted(PRE_TOKENIZERS))
def test_every_pre_tokenizer_round_trips(pre):
    """Each ported llama.cpp regex set compiles and loses no text (vocab: the 256 byte symbols)."""
    byte_symbols = [chr(c) for c in sorted(_BYTE_DECODER)]
    tok = Tokenizer.from_metadata({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre,
                                   "tokenizer.ggml.tokens": byte_symbols, "tokenizer.ggml.merges": []})
    text = "Hello, World's 12345 tabs\tand  spaces\n\nÜnïcödé 中文 🚀 <|x|>"
    ids = tok.encode(text)
    assert len(ids) == len(text.encode()) and tok.decode(ids) == text


def test_chat_template_sandbox_blocks_attribute_access():
    with pytest.raises(ChatTemplateError):
        ChatTemplate("{{ ''.__class__.__mro__ }}", "<s>", "</s>").render([])


def test_chat_template_raise_exception_reaches_caller():
    template = ChatTemplate("{{ raise_exception('only user and assistant roles') }}", "<s>", "</s>")
    with pytest.raises(ChatTemplateError, match="only user and assistant roles"):
        template.render([{"role": "system", "content": "x"}])


def test_chat_template_helpers_behave_like_transformers():
    source = "{{ bos_token }}{{ messages[0] | tojson }}{% if tools is none %}|no tools{% endif %}"
    rendered = ChatTemplate(source, "<s>", "</s>").render([{"role": "user", "content": "héllo <b>"}])
    assert rendered == '<s>{"role": "user", "content": "héllo <b>"}|no tools'
    assert ChatTemplate("{{ strftime_now('%Y') }}", "", "").render([]).isdigit()


def test_chat_template_errors(gemma3):
    with pytest.raises(ChatTemplateError, match="does not compile"):
        ChatTemplate("{% for %}", "", "")
    with pytest.raises(ChatTemplateError, match="no chat template"):
        ChatTemplate.from_tokenizer(gemma3)  # this GGUF carries none
