"""Pure `torch.nn` modules of actstream: frame backbone, FastBack temporal encoder,
ActionFormer head, and the post-processing functions that turn head outputs into segments.

No threads, sockets, files, clocks or `av` in here.
"""
