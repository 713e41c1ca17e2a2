"""The language side: verbalization (graph to text), text encoder, causal LM, completion,
joint KG-LM training."""
