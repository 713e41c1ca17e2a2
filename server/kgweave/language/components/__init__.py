"""The language side's parts: the text encoder, causal language models, the tokenizer."""
