"""Side-by-side speed measurements against peers (scripts, not timed tests).

    python -m benchmarks.train_throughput       python -m benchmarks.inference_throughput
    python -m benchmarks.input_pipeline         python -m benchmarks.import_time

Each prints a Markdown table and the targets of issue 6; ``--quick`` is a smoke run.
"""
