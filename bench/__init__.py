"""Benchmarks (scripts, not part of the installed package): ``serve.py`` (serving benchmark
against SGLang servers), ``step_cost.py`` (GPU forward cost of W query tokens, no SGLang),
``bench_kernels.py`` (fused ops), ``report.py`` (tables and plots from results)."""
