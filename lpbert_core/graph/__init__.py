"""The knowledge graph: raw-file readers, the tokenized graph, known answers."""
