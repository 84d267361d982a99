"""Ingest benchmark: `deepext datasets push` of a large JSONL file vs a plain `pyarrow.json.read_json`.

Generates a JSONL file of N prompt/completion rows (default 1,000,000, about 500 MB), then runs
each contender in a fresh child process, alternating, and reports rows/s and the child's peak RSS.
The push does everything a real push does - hash, UTF-8 check, parse, format detection, row
validation, column stats, Parquet (zstd) into the artifact store, a version row in SQLite - while
pyarrow only parses into memory. Targets: push peak RSS under 1 GiB, push time within 3x of pyarrow.

    .venv/bin/python benchmarks/ingest_jsonl.py [--rows 1000000] [--repeats 2] [--keep FILE]

The last line is machine-readable:
    ingest_jsonl rows=N rows_per_s deepext=X pyarrow=Y ratio=Z peak_rss_mib deepext=A pyarrow=B
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path

WORDS = (
    "the model answers questions about cities rivers numbers and code with short precise sentences "
    "while the reward checks format and correctness of every completion in the group"
).split()


def generate(path: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as out:
        for i in range(rows):
            record = {
                "id": i,
                "prompt": " ".join(rng.choices(WORDS, k=32)),
                "completion": " ".join(rng.choices(WORDS, k=40)),
                "source": rng.choice(["synthetic", "support", "docs"]),
                "score": round(rng.random(), 4),
            }
            out.write(json.dumps(record) + "\n")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_pyarrow(path: str, queue: multiprocessing.Queue) -> None:
    import pyarrow.json as pajson

    started = time.perf_counter()
    table = pajson.read_json(path)
    seconds = time.perf_counter() - started
    queue.put({"rows": table.num_rows, "seconds": seconds, "peak_rss_mib": _peak_rss_mib()})


def run_deepext(path: str, queue: multiprocessing.Queue) -> None:
    from deepext.config import Settings
    from deepext.platform import Platform
    from deepext.projects import create_project

    with tempfile.TemporaryDirectory(prefix="deepext-bench-") as home:
        platform = Platform.open(Settings(home=Path(home)))
        with platform.db.session() as session:
            create_project(session, name="bench", actor="bench")
        started = time.perf_counter()
        outcome = platform.datasets.push("bench", "big", Path(path), actor="bench")
        seconds = time.perf_counter() - started
        queue.put(
            {
                "rows": outcome.version.row_count,
                "seconds": seconds,
                "peak_rss_mib": _peak_rss_mib(),
                "stored_mib": outcome.version.size_bytes / 2**20,
            }
        )


def measure(target, path: Path) -> dict:  # type: ignore[no-untyped-def]
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(str(path), queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="Reuse / keep the generated file at this path.")
    args = parser.parse_args()

    workdir = tempfile.TemporaryDirectory(prefix="deepext-ingest-")
    path = args.keep or Path(workdir.name) / "big.jsonl"
    if not path.exists():
        started = time.perf_counter()
        generate(path, args.rows)
        seconds = time.perf_counter() - started
        print(f"generated {args.rows:,} rows, {path.stat().st_size / 2**20:.0f} MiB in {seconds:.1f} s")
    size_mib = path.stat().st_size / 2**20

    results: dict[str, list[dict]] = {"pyarrow": [], "deepext": []}
    for repeat in range(args.repeats):
        for name, target in (("pyarrow", run_pyarrow), ("deepext", run_deepext)):
            result = measure(target, path)
            results[name].append(result)
            print(
                f"run {repeat + 1} {name:8s} {result['rows']:,} rows in {result['seconds']:.2f} s "
                f"({result['rows'] / result['seconds']:,.0f} rows/s, {size_mib / result['seconds']:.0f} MiB/s), "
                f"peak RSS {result['peak_rss_mib']:.0f} MiB"
                + (f", stored {result['stored_mib']:.0f} MiB Parquet" if "stored_mib" in result else "")
            )
    rows = results["deepext"][0]["rows"]
    seconds = {name: statistics.median(r["seconds"] for r in runs) for name, runs in results.items()}
    peak = {name: max(r["peak_rss_mib"] for r in runs) for name, runs in results.items()}
    ratio = seconds["deepext"] / seconds["pyarrow"]
    print(
        f"ingest_jsonl rows={rows} rows_per_s deepext={rows / seconds['deepext']:.0f} "
        f"pyarrow={rows / seconds['pyarrow']:.0f} ratio={ratio:.2f} "
        f"peak_rss_mib deepext={peak['deepext']:.0f} pyarrow={peak['pyarrow']:.0f}"
    )


if __name__ == "__main__":
    main()
