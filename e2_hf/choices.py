"""Names a user chooses from, in one place and importable without torch, so that every command's
`--help` lists them without importing the code that uses them."""

# model and index storage dtypes. The Hub code's `embedding_e2clip.DTYPE_NAMES` repeats them beside the
# torch dtypes they stand for (it can import nothing from here); tests check that the two agree.
DTYPE_NAMES = ("float32", "bfloat16", "float16")
EXPORT_DTYPES = ("fp32", "fp16")  # the floating-point type of exported ONNX graphs
TAG_SOURCES = ("region", "global")  # the embedding zero-shot tagging scores: an entity's regional one or the global
