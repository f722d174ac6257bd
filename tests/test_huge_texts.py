"""Texts of megabytes: only the start a model can keep is tokenized, in calls that release the GIL, so a thread
embedding short queries beside one is not held up, and the tokens are those of the whole text."""
from __future__ import annotations

import threading
import time

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from edgembed.runtime import Embedder, InputTooLongError
from edgembed.runtime.tokenization import CHARACTERS_PER_TOKEN, MOST_CHARACTERS_PER_TOKEN, TextTokenizer

MEGABYTE = 1 << 20
HUGE = {
    "prose": ("Edge servers embed text without a GPU. " * (50 * MEGABYTE // 39 + 1))[:50 * MEGABYTE],
    "spaces": " " * (50 * MEGABYTE) + "and then words",
    "cjk": "漢字仮名交じり文の長い文書" * (20 * MEGABYTE // 13),
}
ALLOWED_DELAY = 0.050


@pytest.fixture(scope="module")
def model(fast_export):
    return Embedder.load(fast_export, variant="fp32", backend="onnxruntime")


def _query_latencies(model: Embedder, work) -> list[float]:
    """Latencies of a thread embedding one short query after another while `work()` runs on this thread."""
    latencies: list[float] = []
    done = threading.Event()

    def queries() -> None:
        while not done.is_set():
            started = time.perf_counter()
            model.encode(["how do I reset my router?"])
            latencies.append(time.perf_counter() - started)

    thread = threading.Thread(target=queries)
    thread.start()
    time.sleep(0.2)
    try:
        work()
    finally:
        time.sleep(0.05)
        done.set()
        thread.join()
    return latencies


@pytest.mark.parametrize("kind", sorted(HUGE))
@pytest.mark.parametrize("truncate", [True, False])
def test_a_huge_text_delays_a_thread_of_short_queries_by_under_50_ms(model, kind, truncate):
    text = HUGE[kind]
    quiet = max(_query_latencies(model, lambda: time.sleep(0.5)))

    def embed_huge() -> None:
        try:
            model.encode([text], truncate=truncate)
        except InputTooLongError:
            assert not truncate

    busy = max(_query_latencies(model, embed_huge))
    assert busy - quiet < ALLOWED_DELAY, (kind, truncate, quiet, busy)


def test_the_tokens_of_a_cut_text_are_those_of_the_whole_text(model, fast_export):
    whole = Tokenizer.from_file(str(fast_export / "tokenizer.json"))
    whole.no_padding()
    whole.enable_truncation(max_length=model.max_length)
    budget = model.max_length * CHARACTERS_PER_TOKEN
    for text in ("word " * (2 * budget), "x" * (3 * budget), "a " * 10 + " " * (4 * budget) + "late words"):
        assert model.tokenize([text]).encodings[0].ids == whole.encode(text).ids


def test_past_the_reading_limit_a_text_is_cut_and_counted_as_truncated(tmp_path):
    tokenizer = Tokenizer(models.WordPiece({"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "[PAD]": 3, "a": 4}, unk_token="[UNK]",
                                           max_input_chars_per_word=100))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                             special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    texts = TextTokenizer(tmp_path / "tokenizer.json", max_length=16, pad_token_id=3)
    ceiling = 16 * MOST_CHARACTERS_PER_TOKEN
    words = ("x" * 1000 + " ") * (ceiling // 1000 + 2)  # one [UNK] per 1,001 characters
    assert texts.tokenize(["a a", "x" * 1000 + " a"]).truncated == (False, False)
    assert texts.tokenize([words]).truncated == (True,)
    with pytest.raises(InputTooLongError, match=f"more than the {ceiling} that are read"):
        texts.tokenize([words], truncate=False)
