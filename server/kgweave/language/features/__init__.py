"""What the language side offers: graph to text, LLM-driven completion, cold start, semantic
search, and the text fusion (link prediction by embeddings and entity text together)."""
