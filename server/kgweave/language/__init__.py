"""The language side: ``components`` (text encoder, causal LM, tokenizer), ``features``
(verbalization, completion, cold start, semantic search, text fusion) and ``joint`` (joint
KG-LM training and its artifact)."""
