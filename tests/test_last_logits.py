"""Task metrics project only each row's last real token onto the vocabulary; the logits are those of the full pass."""

import pytest
import torch

from core.data.tasks import ioi_items
from core.data.tokens import task_batches
from core.model.last_logits import last_logits


@pytest.mark.parametrize("arch", ["llama", "qwen3", "opt", "gpt2", "gpt_neox"])
def test_last_logits_are_the_full_pass_at_each_rows_last_token(tokenizer, arch):
    from conftest import make_tiny

    lm = make_tiny(arch, tokenizer)
    batch = next(iter(task_batches(tokenizer, ioi_items(8, 0), 64, 8)))
    assert len(set(batch.mask.sum(1).tolist())) > 1  # rows of different lengths: the padding matters
    full = lm.model(input_ids=batch.ids, attention_mask=batch.mask, use_cache=False).logits
    expected = full[torch.arange(batch.size), batch.mask.sum(1) - 1]
    assert torch.allclose(last_logits(lm.model, batch.mask, input_ids=batch.ids), expected, atol=1e-5)

    class Wrapped:  # a callable without logits_to_keep gets the whole projection
        def __call__(self, **kwargs):
            assert "logits_to_keep" not in kwargs
            return lm.model(**kwargs)

    assert torch.allclose(last_logits(Wrapped(), batch.mask, input_ids=batch.ids), expected, atol=1e-5)
