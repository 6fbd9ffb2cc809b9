"""The foundations every stage stands on, and nothing above them: typed-config checks (schema), the
stage cache and the plan, the names of stages and files (artifacts), what a job logs (contract), the
packed-token format, the tokenizer's special tokens, model loading, geometry, the paper's numbers."""
