"""InferOps domain logic: catalog, pre-flight planning, storage. Shared by every function as a layer."""
