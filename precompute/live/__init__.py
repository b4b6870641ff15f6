"""The live worker: puts any image or text through an index's models and SAEs.

The explorer (`app/`) never imports torch; it talks to this worker over HTTP. Each SAE's live
result repeats the offline pipeline exactly: the same extractor code (`precompute.extractors`),
model, layer, token selection and input size (from the store manifest) and the same checkpoint.
Modules: `specs` (what the index says about each SAE), `inputs` (safe decoding of uploads and
dataset samples), `engine` (models, SAE codes), `steer` (edits and their targets), `batcher`
(bounded queue, batched forwards), `server` (the HTTP API).
"""
