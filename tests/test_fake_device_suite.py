"""CI runs the device paths of the suite on the strict fake GPU (``tests/fakecupy``).

One subprocess runs the engine suites, the layers, the optimizers and the models' device-aware
tests with ``TINYLLM_TEST_DEVICE=fake-cuda``: the ``device`` fixture is then 'cuda' and every
array of those tests lives on a device that refuses implicit NumPy conversion and host arrays
mixed in. The test fails with the subprocess's summary. (The parity, transfer and memory tests
of ``test_fake_device_*.py`` install the fake themselves and run in this process.)
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SUITES = [
    # the engine: every op's forward and gradient on the device (all of these take `device`)
    "tests/test_ops_grad.py", "tests/test_tensor.py", "tests/test_tensor_semantics.py",
    "tests/test_functional.py",
    "tests/test_against_torch.py", "tests/test_errors.py::test_mixing_devices",
    "tests/test_op_table.py",  # every public op and method, forward and gradients
    # nn and optim against PyTorch
    "tests/test_nn_torch.py::test_linear_layernorm_embedding_gelu_match_torch",
    "tests/test_nn_torch.py::test_multi_head_attention_matches_torch",
    "tests/test_nn_torch.py::test_pre_ln_block_matches_handwritten_torch_block",
    "tests/test_nn_torch.py::test_post_ln_block_matches_torch_encoder_layer",
    "tests/test_optim_torch.py",
    # the models: GPT, generation (greedy, sampling, beams, the KV cache), BERT, encoder-decoder,
    # Llama
    "tests/test_gpt.py::test_shapes_and_loss", "tests/test_gpt.py::test_causal",
    "tests/test_gpt.py::test_float32_gradients_stay_float32", "tests/test_gpt.py::test_matches_pytorch",
    "tests/test_generation.py::test_greedy_is_argmax_loop",
    "tests/test_generation.py::test_cache_gives_same_tokens",
    "tests/test_generation.py::test_beam_search_finds_best_by_brute_force",
    "tests/test_bert.py::test_padding_does_not_change_real_positions",
    "tests/test_bert.py::test_bert_for_pretraining_output_and_loss",
    "tests/test_transformer_seq2seq.py::test_incremental_decoding_matches_full_decoding",
    "tests/test_transformer_seq2seq.py::test_matches_torch_transformer",
    "tests/test_llama.py::test_runs_on_the_test_device",
    # the assistant: LoRA, the DPO loss, streaming generation
    "tests/test_assistant.py::test_assistant_parts_run_on_the_test_device",
    # data parallelism in one process: accumulation, ZeRO-1, the world of one's collectives
    "tests/test_distributed.py::test_the_data_parallel_step_runs_on_the_test_device",
]


def test_device_suites_pass_on_the_fake_device():
    if os.environ.get("TINYLLM_TEST_DEVICE", "cpu") != "cpu":
        pytest.skip("this run is on a device already: the suites run here directly")
    env = {**os.environ, "TINYLLM_TEST_DEVICE": "fake-cuda"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rfE", *SUITES],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    summary = r.stdout[-6000:] + r.stderr[-2000:]
    assert r.returncode == 0, f"the device suites fail on the fake device:\n{summary}"
    assert "tinyllm test device: fake-cuda" in r.stdout and " passed" in r.stdout, summary
