"""Joint KG-LM training (``kgweave train --joint``): the pipeline, the LM that sees entity
embeddings, the graph's text corpus, and the artifact's language side."""
