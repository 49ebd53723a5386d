"""benchmarks/step_throughput.py in its tiny CPU mode: one step of every case, with Ray and MLflow unimportable."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the GPU host has torch and open_clip but neither Ray nor MLflow: make both fail to import
BLOCKED = ("import runpy, sys; sys.modules.update(ray=None, mlflow=None); sys.argv = sys.argv[1:]; "
           "runpy.run_path(sys.argv[0], run_name='__main__')")


def tiny_clip_step_flops(batch=8, image=32, patch=8, width=128, layers=4, context=32, embed=128):
    """Forward + backward FLOPs of a CLIP step of the `tiny` config, counted by hand.

    A (m x k) @ (k x n) product is m k n multiply-adds, 2 m k n FLOPs; its backward is twice that, except
    the patch embedding, whose input (the images) needs no gradient.
    """
    def tower(tokens):  # per sample, one transformer of `layers` pre-norm blocks with a 4x MLP
        dense = 12 * width * width  # qkv 3, out 1, MLP 8, times width^2, per token
        attention = 2 * tokens * width  # q k^T and attn v, per token
        return layers * tokens * (dense + attention)

    patches = (image // patch) ** 2
    patch_embed = patches * width * 3 * patch * patch
    per_sample = tower(1 + patches) + patch_embed + width * embed + tower(context) + width * embed
    logits = 2 * batch * batch * embed  # image @ text^T and text @ image^T
    forward = 2 * (batch * per_sample + logits)
    return 3 * forward - 2 * batch * patch_embed


def test_tiny_mode_runs_every_case_without_ray_or_mlflow(tmp_path):
    out = tmp_path / "tiny.json"
    proc = subprocess.run([sys.executable, "-c", BLOCKED, str(ROOT / "benchmarks" / "step_throughput.py"), "--tiny",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = {r["case"]: r for r in result["rows"]}
    assert set(rows) == {"a", "b", "c", "d"} and all(r["mode"] == "eager" for r in rows.values())
    assert all(r["step_s"] > 0 and len(r["step_times_s"]) == 1 for r in rows.values())
    flops = {k: r["tflop_per_step"] * 1e12 for k, r in rows.items()}
    assert abs(flops["a"] - tiny_clip_step_flops()) <= 1e-6 * flops["a"]
    assert flops["b"] == flops["a"]  # the project's clip step computes exactly open_clip's step
    # ITO adds a second view, the fusion module and its loss; patch dropout takes part of that back
    assert 1.8 * flops["a"] < flops["c"] < 2.2 * flops["a"] and flops["a"] < flops["d"] < 0.9 * flops["c"]
    assert rows["a"]["time_ratio_to_a"] == 1.0 and "| tiny | 8 | eager | c TrainStep ITO |" in proc.stdout
