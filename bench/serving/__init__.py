"""Parts of the serving benchmark (``bench/serve.py``): prompt sets and answer checking
(``prompts``), decoding modes and their server flags (``modes``), the SGLang server process
(``server``), the streaming load generator (``client``), summaries and ratios (``stats``),
and the run manifest (``manifest``)."""
