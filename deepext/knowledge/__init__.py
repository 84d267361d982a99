"""Knowledge bases: documents of a project split into chunks, embedded locally and kept in a vector
store (embedded LanceDB, or Weaviate), searched by meaning and used to ground chat answers (RAG).

One job per module: `store` (the vector-store contract and the backend choice), `lancedb_store` /
`weaviate_store` (the backends), `embeddings` (the local sentence-embedding model), `chunking`
(text, Markdown and PDF into chunks), `bases` (knowledge bases and their documents in the metadata
store), `rag` (retrieval into chat messages), `duplicates` (near-duplicate rows of a dataset).
Nothing is imported or loaded until used.
"""
