"""CPU cost of the vLLM backend's request validation (``VLLMReplica.validate``), per request.

Times what ``validate`` runs: vLLM's ``SamplingParams`` constructor (its value checks) and
``SamplingParams.verify`` against the real ``ModelConfig`` of the embedded SmolLM2-135M-Instruct
(built from the checkpoint folder; no engine is started). Writes
``bench/results/validate_overhead.json`` with the 1-minute load average, since the development
machine is shared.

Run: ``python bench/validate_overhead.py [--calls 20000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20000, help="calls per round (default 20000)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds; the median is reported (default 5)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "validate_overhead.json"))
    args = ap.parse_args()

    from vllm.engine.arg_utils import AsyncEngineArgs

    from oserve.backends.base import SamplingParams
    from oserve.backends.embedded_model import ensure_default_model
    from oserve.backends.vllm_errors import vllm_sampling_params

    model_path = ensure_default_model()
    model_config = AsyncEngineArgs(model=str(model_path), dtype="float32").create_model_config()
    params = SamplingParams(max_tokens=64, temperature=0.7, top_p=0.9, top_k=50, stop=("\n\n",),
                            presence_penalty=0.5, logit_bias={42: 2.0}, seed=1)

    def one() -> None:
        vllm_sampling_params(params).verify(model_config, None, None, None)

    one()
    per_call_us = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for _ in range(args.calls):
            one()
        per_call_us.append((time.perf_counter() - t0) / args.calls * 1e6)
    result = {
        "what": "vllm.SamplingParams(...) + verify(ModelConfig of SmolLM2-135M-Instruct) per request",
        "calls_per_round": args.calls,
        "per_call_us_rounds": [round(x, 2) for x in per_call_us],
        "per_call_us_median": round(statistics.median(per_call_us), 2),
        "load_avg_1min": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
