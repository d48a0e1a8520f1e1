"""The local twin: InferOps' backend offline (moto, the real handlers in-process, scenarios)."""
