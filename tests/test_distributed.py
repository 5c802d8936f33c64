"""2 processes x batch b train exactly like 1 process x batch 2b (embeddings gathered with gradient)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from e2_hf import E2CLIPModel

from .conftest import E2CLIPModelTester

# 8 items, brand / season / subcategory / composition; duplicates across the two halves
TAGS = [
    [[11], [20], [30], [40]],
    [[12], [21], [31], None],
    [[13], [20], [30], [41]],
    [[14], None, [32], [40]],
    [[11], [22], [33], [42]],
    [[15], [21], [30], None],
    [[12], [23], [34], [43]],
    [[16], [20], [35], [40]],
]
ROOT = Path(__file__).resolve().parents[1]


def tiny_model(variant: str) -> E2CLIPModel:
    tester = E2CLIPModelTester(region_loss=variant)
    torch.manual_seed(0)
    return E2CLIPModel(tester.get_config()).eval()  # eval: argmax selection, no sampling to align


def fixed_batch() -> dict[str, torch.Tensor]:
    tester = E2CLIPModelTester()
    input_ids, attention_mask = tester.input_ids(8)
    tag_input_ids, tag_attention_mask = tester.tags(TAGS)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values": tester.pixel_values(8),
        "tag_input_ids": tag_input_ids,
        "tag_attention_mask": tag_attention_mask,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("variant", ["clip", "multi_positive"])
def test_two_processes_match_one_process_with_the_whole_batch(variant, tmp_path):
    output = tmp_path / "rank0.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        str(ROOT / "tests" / "distributed_worker.py"),
        variant,
        str(output),
    ]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr[-4000:]
    distributed = torch.load(output)

    model = tiny_model(variant)
    batch = fixed_batch()
    outputs = model(**batch, return_loss=True)  # one process, the whole batch: nothing to gather
    losses = {"loss": outputs.loss, "region_loss": outputs.region_loss}
    losses["loss"].backward()

    torch.testing.assert_close(distributed["loss"], losses["loss"].detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(distributed["region_loss"], losses["region_loss"].detach(), rtol=1e-5, atol=1e-5)
    for name, parameter in model.named_parameters():
        expected, actual = parameter.grad, distributed["grads"][name]
        if expected is None:
            assert actual is None or not actual.any(), name
            continue
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5, msg=name)
