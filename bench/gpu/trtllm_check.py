"""One-command check of oserve's TensorRT-LLM paths on a machine with an NVIDIA GPU.

Runs the backend conformance suite (:func:`oserve.testing.backend_check.check_backend`) on:

1. ``trtllm``: :class:`oserve.backends.trtllm.TRTLLMBackend` (TensorRT-LLM's Python LLM API in-process);
2. ``process-trtllm``: :class:`oserve.backends.process.ProcessBackend` with the ``trtllm`` launch
   template (``trtllm-serve`` as a child process), if ``trtllm-serve`` is on the PATH.

Each with one replica of a small model on GPU 0 (default: the embedded SmolLM2-135M-Instruct
checkpoint, bf16; ``--model`` takes any Hugging Face checkpoint folder TensorRT-LLM supports).
Writes what passed, what failed (the step and the message) and the versions to
``bench/results/trtllm_check.json``; exits 1 if a suite failed, 2 if nothing could run.

Needs: ``pip install 'oserve[trtllm]'`` (TensorRT-LLM's wheel, CUDA 12), a GPU with >= 8 GB free.
These paths have never run in oserve's CI (no GPU, no TensorRT-LLM wheel there): this script is how
they get validated. Usage::

    python bench/gpu/trtllm_check.py [--model /path/to/hf-checkpoint] [--gpu 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from oserve.backends.base import Backend, ReplicaSpec
from oserve.testing.backend_check import BackendCheckError, acheck_backend


def _gpu() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    r = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                       capture_output=True, text=True, check=False)
    return r.stdout.strip() or None


async def _suite(name: str, factory: Any, spec: ReplicaSpec) -> dict[str, Any]:
    t0 = time.monotonic()
    try:
        report = await acheck_backend(factory, spec, step_timeout_s=300, start_timeout_s=1800)
        return {"backend": name, "passed": True, "steps": report.steps, "start_s": report.start_s,
                "decode_tokens_per_s": report.decode_tokens_per_s, "notes": report.notes,
                "wall_s": time.monotonic() - t0}
    except BackendCheckError as exc:
        return {"backend": name, "passed": False, "failed_step": exc.step, "error": str(exc),
                "cause": repr(exc.__cause__) if exc.__cause__ else None, "wall_s": time.monotonic() - t0}
    except Exception as exc:  # report, do not hide: the point of this script is to find out
        return {"backend": name, "passed": False, "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(), "wall_s": time.monotonic() - t0}


async def main(model: str | None, gpu: int, out: Path) -> int:
    doc: dict[str, Any] = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "python": platform.python_version(), "gpu": _gpu(), "suites": []}
    try:
        import tensorrt_llm

        doc["tensorrt_llm"] = getattr(tensorrt_llm, "__version__", "unknown")
    except Exception as exc:
        doc["tensorrt_llm"] = None
        doc["import_error"] = f"{type(exc).__name__}: {exc}"
    if doc["gpu"] is None or doc["tensorrt_llm"] is None:
        print("needs an NVIDIA GPU (nvidia-smi) and tensorrt_llm (pip install 'oserve[trtllm]'):", doc, file=sys.stderr)
        _write(out, doc)
        return 2
    if model is None:
        from oserve.backends.embedded_model import ensure_default_model

        model = str(ensure_default_model())
    spec = ReplicaSpec(variant="trtllm-check", model=model, served_model_name="check", dtype="bfloat16",
                       max_model_len=1024, max_num_seqs=16, memory_utilization=0.5, devices=(gpu,))
    from oserve.backends.trtllm import TRTLLMBackend

    factories: list[tuple[str, Any]] = [("trtllm", TRTLLMBackend)]
    if shutil.which("trtllm-serve"):
        from oserve.backends.process import ProcessBackend

        def process_trtllm() -> Backend:
            return ProcessBackend("trtllm", ready_timeout_s=1800)

        factories.append(("process-trtllm", process_trtllm))
    else:
        doc["skipped"] = ["process-trtllm: trtllm-serve is not on the PATH"]
    for name, factory in factories:
        print(f"running check_backend on {name} ...", flush=True)
        result = await _suite(name, factory, spec)
        print(json.dumps({k: v for k, v in result.items() if k != "traceback"}, indent=2), flush=True)
        doc["suites"].append(result)
    _write(out, doc)
    return 0 if all(s["passed"] for s in doc["suites"]) else 1


def _write(out: Path, doc: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="Hugging Face checkpoint folder (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--gpu", type=int, default=0, help="GPU id")
    p.add_argument("--out", type=Path, default=Path("bench/results/trtllm_check.json"))
    a = p.parse_args()
    sys.exit(asyncio.run(main(a.model, a.gpu, a.out)))
