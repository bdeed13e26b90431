"""`EngineConfig`: the engine's options, checked once, before a model loads."""
import dataclasses

import pytest

from labkit.engine import LLM
from labkit.engine.config import EngineConfig


@pytest.mark.parametrize("options, message", [
    ({"backend": "cuda"}, "backend must be 'torch' or 'numba'"),
    ({"scheduler": "dynamic"}, "scheduler must be 'continuous' or 'static'"),
    ({"max_batch_size": 0}, "max_batch_size must be >= 1"),
    ({"max_num_batched_tokens": 0}, "max_num_batched_tokens must be >= 1"),
    ({"max_model_len": -5}, "max_model_len must be >= 1"),
])
def test_bad_options_are_refused_in_one_line(options, message):
    with pytest.raises(ValueError, match=message):
        EngineConfig(**options)
    with pytest.raises(dataclasses.FrozenInstanceError):
        EngineConfig().backend = "numba"


def test_the_llm_checks_them_before_loading_a_model(tmp_path):
    # a folder that does not exist would fail to load: the option is refused first
    with pytest.raises(ValueError, match="scheduler"):
        LLM(str(tmp_path / "no-model"), scheduler="dynamic")
    with pytest.raises(ValueError, match="backend"):
        LLM(str(tmp_path / "no-model"), backend="tpu")


def test_the_engine_runs_with_the_filled_in_config(tiny, tokenizer):
    llm = LLM(tiny, tokenizer=tokenizer, num_blocks=12, block_size=8, max_batch_size=3, scheduler="static")
    config = llm.engine.config
    assert config.max_model_len == llm.max_model_len == 96 and config.max_num_batched_tokens == 512   # CPU default
    assert (llm.engine.scheduler.max_batch_size, llm.engine.scheduler.mode) == (3, "static")
    assert llm.engine.runner.max_blocks == 12 and llm.engine.runner.backend == "torch"
