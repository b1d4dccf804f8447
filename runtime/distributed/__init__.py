"""Scale-out (DESIGN §12): work spread over Ray actors that each hold their ONNX Runtime sessions (ray.py, the
`ray` extra).  The core's own split is Explainer.explain_shard / merge; any engine can run the shards."""
