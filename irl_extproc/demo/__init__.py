"""The demo LLM upstream used by ``irl up``, the end-to-end tests and the benchmarks."""
