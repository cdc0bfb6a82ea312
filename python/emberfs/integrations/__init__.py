"""Connectors for inference engines: `emberfs.integrations.vllm` (a vLLM
KVConnectorBase_V1) and `emberfs.integrations.lmcache` (an LMCache remote
connector). Each imports its engine lazily and raises ImportError naming
the missing package when it is absent; `import emberfs` never needs them."""
