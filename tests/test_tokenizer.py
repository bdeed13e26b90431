"""Tokenizer, chat template and streaming detokenization on the embedded model's tokenizer."""
import pytest

from labkit.models.tokenizer import StreamDecoder


@pytest.fixture(scope="module")
def tok(embedded):
    return embedded[1]


def test_round_trip_and_special_tokens(tok):
    text = "Crème brûlée costs 12 euros; naïve café owners say 😀 hello!"
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode("<|im_start|>") == [1] and tok.encode("<|im_end|>") == [2]
    assert len(tok.encode("2024")) == 4  # SmolLM splits numbers into single digits
    assert tok.eos_token_ids == {2}


def test_chat_template_renders_chatml(tok):
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert text == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    own = tok.apply_chat_template([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert own.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")


def test_stream_decoder_reassembles_multibyte_text(tok):
    text = "Ünïcödé ☃ and emoji 🤖🤖 split across byte tokens."
    decoder = StreamDecoder(tok)
    pieces = [decoder.push(i) for i in tok.encode(text)] + [decoder.finish()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_stream_decoder_stops_without_showing_the_stop_string(tok):
    decoder = StreamDecoder(tok, stop=["END HERE"])
    shown = [decoder.push(i) for i in tok.encode("First line. Second line END HERE and more")]
    shown.append(decoder.finish())
    assert decoder.stopped
    assert "".join(shown) == "First line. Second line "
    assert not any("END" in p for p in shown)


def test_stream_decoder_releases_a_false_alarm(tok):
    decoder = StreamDecoder(tok, stop=["\n\n"])
    out = "".join(decoder.push(i) for i in tok.encode("one\ntwo\nthree")) + decoder.finish()
    assert out == "one\ntwo\nthree" and not decoder.stopped
