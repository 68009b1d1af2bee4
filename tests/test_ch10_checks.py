"""Chapter 10's exercise checker: position ids from the attention mask."""
import pytest
import torch

from minippo import checks

torch.set_num_threads(1)  # one thread, as in the chapters (spinning threads waste CPU on a shared machine)


def position_ids(attention_mask):
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def test_solution_passes(capsys):
    assert checks.check_position_ids(position_ids)
    assert "✓ position_ids" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, message", [
    (lambda m: torch.arange(m.shape[1]).expand(m.shape[0], -1), "differs"),  # what GPT-2 does without position_ids
    (lambda m: m.long().cumsum(dim=1) - 1, "differs"),  # -1 on padding
    (lambda m: (m.long().cumsum(dim=0) - 1).clamp(min=0), "differs"),  # the wrong axis
    (lambda m: (m.float().cumsum(dim=1) - 1).clamp(min=0), "dtype"),  # float positions
])
def test_typical_mistakes_fail_with_the_case(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_position_ids(wrong)
