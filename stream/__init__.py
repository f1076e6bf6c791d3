"""Video sources for actstream: PyAV readers, the synthetic live source, frame buffers.

This package never imports torch: it turns cameras, files and URLs into frozen `Frame`
objects in bounded buffers, and reports each stream's state changes.
"""
