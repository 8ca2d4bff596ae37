"""Timing scripts, run from the repository root: python -m benchmarks.<name>.

Every benchmark process (ours, the baselines, the samplers) runs under the allocator setting
the charrnn command sets as it starts, so no comparison is won or lost by malloc alone.
"""

from charrnn.allocator import keep_freed_memory

keep_freed_memory()
