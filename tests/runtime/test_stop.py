"""Stop strings over streamed tokens: cut exactly before the stop, even across token boundaries."""
import pytest

from kt.gguf.reader import GGUFFile
from kt.gguf.tokenizer import Tokenizer
from kt.runtime.stop import StopTextStream

TEXT = "Paris is the capital of France, and its largest city."


@pytest.fixture(scope="module")
def tokenizer(smollm2_path):
    return Tokenizer.from_metadata(GGUFFile(smollm2_path).metadata)


def stream(tokenizer, stop):
    out, s = [], StopTextStream(tokenizer, stop)
    for token in tokenizer.encode(TEXT):
        delta = s.add(token)
        out.append(delta.text)
        if delta.stopped:
            return "".join(out), True
    return "".join(out) + s.finish().text, False


@pytest.mark.parametrize("stop", ["capital", "l of Fr", "e, a", "city."])
def test_stop_cuts_before_it(tokenizer, stop):
    assert stream(tokenizer, (stop,)) == (TEXT[: TEXT.index(stop)], True)


def test_earliest_of_several_stops_wins(tokenizer):
    assert stream(tokenizer, ("largest", "the cap")) == ("Paris is ", True)


def test_no_stop_gives_everything(tokenizer):
    assert stream(tokenizer, ("Berlin", "cities")) == (TEXT, False)
