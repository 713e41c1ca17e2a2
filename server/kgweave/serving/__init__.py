"""The serving engine behind ``kgweave serve``: model registry, hot swap, batching, jobs."""
