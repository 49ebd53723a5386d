"""Peak memory of evaluating a 20,000-image benchmark: streamed in batches against read whole into memory.

The benchmark is CLIP_benchmark's webdataset layout (DATA/test/NNNNNN.tar with key.jpg, key.cls, key.txt;
DATA/classnames.txt and DATA/zeroshot_classification_templates.txt one folder up) holding --images smooth
random 224-px JPEGs (a few random colours upsampled: small shards, fast to write), evaluated for zero-shot
classification by a cheap random-weight open_clip ViT (patch 32, width 128, 2 layers), so decoding and
memory, not compute, decide the figures. Each measurement runs in a fresh process: after imports and model
creation it resets the kernel's peak-RSS mark (/proc/self/clear_refs, falling back to ru_maxrss where that
is refused) and reads its RSS; the figure is the growth of peak RSS (VmHWM) over that RSS by the end of the
evaluation, with its wall time and images/s.

A checkout with ito_sweeps.evaluate.suite runs `evaluate_suite` (one benchmark with path = the shards,
batch 256, no loader processes, so that all the work is in the measured process). `--checkout DIR` runs
another checkout (put first on PYTHONPATH); one without the suite (8a52248, before streaming) is run the
way it evaluated: `read_heldout` (uint8 images, 150 KB each at 224 px) and `Embedder.images`. Both see the
same pixels, so their zero-shot top-1 must agree. The shards are cached in --data, so both share them.
`--env` sets variables in the measuring process only: MALLOC_MMAP_THRESHOLD_=65536 (glibc returns every
freed tensor to the kernel) separates the working set from what the allocator keeps after frees.

    git worktree add /tmp/before 8a52248
    .venv/bin/python benchmarks/eval_memory.py --data /tmp/eval_memory --checkout /tmp/before --out benchmarks/results/eval_memory_before.json
    .venv/bin/python benchmarks/eval_memory.py --data /tmp/eval_memory --repeat 2     # writes results/eval_memory_cpu.json
    .venv/bin/python benchmarks/eval_memory.py --data /tmp/eval_memory --env MALLOC_MMAP_THRESHOLD_=65536 --out benchmarks/results/eval_memory_cpu_mmap64k.json
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 2**20
CLASSES = ["red", "green", "blue", "yellow", "purple", "orange", "grey", "brown", "pink", "teal"]
TEMPLATES = ["a photo of a {c} thing.", "a {c} picture."]
# A ViT cheap enough that decoding and memory dominate: 7x7 patches at 224 px, two narrow blocks per tower.
MODEL = {"embed_dim": 64,
         "vision_cfg": {"image_size": 224, "patch_size": 32, "width": 128, "head_width": 32, "layers": 2},
         "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


def write_benchmark(folder: Path, n: int, size: int, shard_size: int = 1000, seed: int = 0) -> None:
    """n smooth random JPEGs with labels and captions in CLIP_benchmark's layout; kept if already written."""
    done = folder / "benchmark.json"
    if done.is_file() and json.loads(done.read_text()) == {"images": n, "size": size, "seed": seed}:
        return
    import numpy as np
    from PIL import Image
    from webdataset import ShardWriter

    (folder / "test").mkdir(parents=True, exist_ok=True)
    for old in (folder / "test").glob("*.tar"):
        old.unlink()
    rng = np.random.default_rng(seed)
    with ShardWriter(str(folder / "test" / "%06d.tar"), maxcount=shard_size, verbose=0) as sink:
        for i in range(n):
            label = int(rng.integers(len(CLASSES)))
            colours = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            image = Image.fromarray(colours).resize((size, size), Image.BILINEAR)
            jpeg = io.BytesIO()
            image.save(jpeg, format="JPEG", quality=90)
            sink.write({"__key__": f"{i:08d}", "jpg": jpeg.getvalue(), "cls": str(label).encode(),
                        "txt": f"a photo of a {CLASSES[label]} thing.".encode()})
    (folder / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    (folder / "zeroshot_classification_templates.txt").write_text("\n".join(TEMPLATES) + "\n")
    done.write_text(json.dumps({"images": n, "size": size, "seed": seed}))


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def measure(data: Path, n: int, batch_size: int) -> dict:
    """One measurement in this (fresh) process: the streaming suite if this checkout has it, else the old path."""
    import contextlib

    import open_clip
    import torch

    import ito_sweeps
    import ito_sweeps.data.shards  # noqa: F401  (both paths read shards with it; imported before the baseline)

    streaming = importlib.util.find_spec("ito_sweeps.evaluate.suite") is not None
    if streaming:
        from ito_sweeps import config as C
        from ito_sweeps.evaluate.suite import Encoder, evaluate_suite
    else:
        from ito_sweeps.data.heldout import read_heldout
        from ito_sweeps.data.paths import metadata_folders
        from ito_sweeps.data.shards import ShardSource
        from ito_sweeps.evaluate.run import Embedder
        from ito_sweeps.evaluate.zeroshot import class_embeddings, zeroshot_top1
    torch.manual_seed(0)
    model = open_clip.CLIP(**MODEL).eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    preprocess = open_clip.image_transform(MODEL["vision_cfg"]["image_size"], is_train=False)
    spec, cpu = str(data / "test"), torch.device("cpu")
    if streaming:
        bench = {"name": "synthetic", "tasks": ["zeroshot_classification"], "path": spec, "size": n}
        cfg = C.load(None, ["run.device=cpu", f"eval.batch_size={batch_size}",
                            f"eval.benchmarks={json.dumps([bench])}"])
        encoder = Encoder(model, tokenizer, preprocess, cpu, batch_size, contextlib.nullcontext)

    # the baseline: everything imported and built; only what evaluation itself holds is measured
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        peak_source = "VmHWM after clear_refs"
    except OSError:
        peak_source = "ru_maxrss (peak since process start: includes imports)"
    start_rss = _status_kib("VmRSS")
    started = time.perf_counter()
    if streaming:
        metrics, _ = evaluate_suite(encoder, cfg, "test")
        samples, top1 = int(metrics["synthetic/samples"]), metrics["synthetic/zeroshot_top1"]
        path = "evaluate_suite: streamed batches of eval.batch_size"
    else:
        split = read_heldout(ShardSource(spec, 1), metadata_folders(spec), n, MODEL["vision_cfg"]["image_size"], 1)
        # the old Embedder calls model.encode_image(normalize(uint8 batch)): open_clip's CLIP has that method
        image = Embedder(model, tokenizer, cpu, batch_size, contextlib.nullcontext).images(split.images)
        with torch.no_grad():
            classes = class_embeddings(model, tokenizer, split.classnames["class"], split.templates["class"], cpu)
        samples, top1 = len(image), zeroshot_top1(image, classes, split.labels["class"])
        path = "read_heldout (whole split as uint8 in memory) + Embedder.images"
    wall = time.perf_counter() - started
    peak = _status_kib("VmHWM") if peak_source.startswith("VmHWM") else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"ito_sweeps": str(Path(ito_sweeps.__file__).parent.parent), "path": path, "samples": samples,
            "zeroshot_top1": round(top1, 6), "rss_before_eval_mib": round(start_rss / 1024, 1),
            "peak_rss_mib": round(peak / 1024, 1), "peak_rss_growth_mib": round((peak - start_rss) / 1024, 1),
            "peak_source": peak_source, "eval_wall_s": round(wall, 2), "images_per_s": round(samples / wall, 1),
            "torch_threads": torch.get_num_threads(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, help="measure this checkout of the project, not the installed one")
    parser.add_argument("--data", type=Path, help="where the shards are written, or reused from (default: a temp dir)")
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=1, help="measurements, each in a fresh process")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="set in the measuring process, e.g. MALLOC_MMAP_THRESHOLD_=65536 (repeatable)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "eval_memory_cpu.json")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # the measuring child
    args = parser.parse_args()

    data = args.data or Path(tempfile.mkdtemp(prefix="eval-memory-"))
    if args.measure:
        print(json.dumps(measure(data, args.images, args.batch_size)))
        return

    started = time.perf_counter()
    write_benchmark(data, args.images, args.image_size)
    written = time.perf_counter() - started
    shard_bytes = sum(p.stat().st_size for p in (data / "test").glob("*.tar"))
    print(f"benchmark: {args.images} images in {shard_bytes / MIB:.1f} MiB of shards at {data} ({written:.1f} s)")

    env = dict(os.environ)
    if args.checkout:
        env["PYTHONPATH"] = os.pathsep.join([str(args.checkout.resolve()), env.get("PYTHONPATH", "")])
    env.update(item.split("=", 1) for item in args.env)
    child = [sys.executable, str(Path(__file__).resolve()), "--measure", "--data", str(data), "--images",
             str(args.images), "--batch-size", str(args.batch_size)]
    runs = []
    for _ in range(args.repeat):
        done = subprocess.run(child, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"measurement failed:\n{done.stderr[-3000:]}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = runs[-1]
        print(f"{r['path']}: peak RSS +{r['peak_rss_growth_mib']} MiB over {r['rss_before_eval_mib']} MiB, "
              f"{r['eval_wall_s']} s, {r['images_per_s']} images/s, top-1 {r['zeroshot_top1']}")
    command = " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])
    result = {"command": command, "measurement_command": " ".join(shlex.quote(a) for a in child),
              "checkout": str(args.checkout or "installed"), "env": args.env, "images": args.images,
              "image_size": args.image_size,
              "shard_mib": round(shard_bytes / MIB, 1), "batch_size": args.batch_size, "model": MODEL,
              "cpu_cores": os.cpu_count(), "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
