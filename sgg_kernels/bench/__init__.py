"""Benchmarks of the sgg ops that ship with the package: `python -m sgg_kernels.bench` (see __main__.py).

cases: what is compared (sizes, inputs, providers and baselines); timing: how a call is timed;
run: the runner without pytest; table: rows and the report's Markdown; machine: the machine kind a
baseline is stored under; results: the result file and the stored baselines; guard: the regression
guard on ratios; e2e_sd3: the end-to-end SD3 comparison (needs diffusers). The repository's
benchmarks/ folder wraps the same code in a pytest-benchmark suite and a report.
"""
