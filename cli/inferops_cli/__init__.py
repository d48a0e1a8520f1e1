"""`inferops`: the operator CLI for the InferOps API (SigV4-signed, works against AWS and the local twin)."""
