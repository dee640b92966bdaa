"""Launch templates render the spec into each engine's command line; error answers map to typed errors."""

from __future__ import annotations

import pytest

from oserve.backends.base import ReplicaSpec
from oserve.backends.launch_templates import TEMPLATES, LaunchTemplate, get_template, render
from oserve.backends.process import ProcessBackend, error_from_response, parse_metrics
from oserve.errors import ConfigError, InvalidRequestError, ModelNotFoundError, ReplicaError

SPEC = ReplicaSpec(variant="v", model="/models/m", served_model_name="m", dtype="bfloat16", max_model_len=1024,
                   max_num_seqs=16, tensor_parallel_size=2, kv_cache_bytes=1 << 30, cpu_cores=(0, 1), devices=(2, 3))


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_vllm_template() -> None:
    argv, env = render(get_template("vllm"), SPEC, "127.0.0.1", 9000)
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert flag(argv, "--port") == "9000" and flag(argv, "--model") == "/models/m"
    assert flag(argv, "--tensor-parallel-size") == "2" and flag(argv, "--max-num-seqs") == "16"
    assert flag(argv, "--kv-cache-memory-bytes") == str(1 << 30) and "--enforce-eager" in argv
    assert "--quantization" not in argv and "--max-num-batched-tokens" not in argv  # unset fields emit nothing
    assert env == {"VLLM_CPU_OMP_THREADS_BIND": "0,1", "CUDA_VISIBLE_DEVICES": "2,3"}


def test_vllm_on_cpu_reserves_what_the_in_process_backend_reserves() -> None:
    argv, _ = ProcessBackend("vllm").command(SPEC, 9000)
    assert flag(argv, "--gpu-memory-utilization") == "0.15"
    argv, _ = ProcessBackend("vllm").command(SPEC.model_copy(update={"memory_utilization": 0.5}), 9000)
    assert flag(argv, "--gpu-memory-utilization") == "0.5"


def test_trtllm_and_sglang_templates() -> None:
    argv, _ = render(get_template("trtllm"), SPEC.model_copy(update={"quantization": None}), "127.0.0.1", 1)
    assert argv[:2] == ["trtllm-serve", "/models/m"] and flag(argv, "--tp_size") == "2"
    assert flag(argv, "--max_batch_size") == "16" and flag(argv, "--max_seq_len") == "1024"
    argv, _ = render(get_template("sglang"), SPEC, "127.0.0.1", 1)
    assert "sglang.launch_server" in argv and flag(argv, "--tp-size") == "2"
    assert flag(argv, "--context-length") == "1024" and flag(argv, "--model-path") == "/models/m"


def test_bad_templates_are_config_errors() -> None:
    with pytest.raises(ConfigError) as info:
        get_template("tgi")
    assert info.value.field == "template" and "vllm" in info.value.allowed
    with pytest.raises(ConfigError, match="unknown placeholder") as info:
        render(LaunchTemplate(name="x", argv=("serve", "{modle}")), SPEC, "h", 1)
    assert info.value.field == "argv"
    with pytest.raises(ConfigError):
        render(LaunchTemplate(name="x", argv=("serve",), optional_args={"nope": ("--n",)}), SPEC, "h", 1)
    assert set(TEMPLATES) == {"vllm", "trtllm", "sglang"}


def test_error_answers_map_to_the_in_process_errors() -> None:
    body = b'{"error": {"message": "prompt too long", "type": "BadRequestError", "param": "prompt", "code": null}}'
    err = error_from_response(400, body, "r0")
    assert isinstance(err, InvalidRequestError) and err.param == "prompt" and "prompt too long" in err.message
    old = b'{"object": "error", "message": "bad temperature", "type": "BadRequestError", "param": null, "code": 400}'
    err = error_from_response(400, old, "r0")
    assert isinstance(err, InvalidRequestError) and err.code == "invalid_value" and "bad temperature" in err.message
    assert isinstance(error_from_response(404, b"{}", "r0"), ModelNotFoundError)
    err = error_from_response(500, b"not json", "r0")
    assert isinstance(err, ReplicaError) and err.replica_id == "r0" and "not json" in err.message


def test_parse_metrics_sums_label_sets() -> None:
    text = ('# TYPE vllm:num_requests_running gauge\n'
            'vllm:num_requests_running{engine="0",model_name="m"} 3.0\n'
            'vllm:num_requests_running{engine="1",model_name="m"} 2.0\n')
    values = parse_metrics(text, ["vllm:num_requests_running", "vllm:num_requests_waiting"])
    assert values == {"vllm:num_requests_running": 5.0, "vllm:num_requests_waiting": None}


def test_trtllm_requests_name_the_model_argument() -> None:
    assert get_template("trtllm").request_model.format(model="/models/m") == "/models/m"
    assert get_template("vllm").request_model.format(served_model_name="m") == "m"
