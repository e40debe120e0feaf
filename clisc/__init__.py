"""clisc: reproduce, audit and extend CLISC (CLIP + SAM + enhanced CAM for brain tumour segmentation).

Array conventions used across the package (see docs/DESIGN.md "Conventions"):

* volumes are ``numpy`` arrays in nibabel's ``XxYxZ`` order, axial slices are ``vol[:, :, z]``,
  which a 2D model sees as ``vol[:, :, z].T`` (rows = y; ``clisc.stages.slice_input``);
* spacing is a ``(sx, sy, sz)`` tuple in millimetres, in the same order;
* images are ``float32``; labels and masks are ``uint8``/``bool`` with tumour = 1;
* torch batches follow ``BxCxHxW`` (2D) and ``BxCxXxYxZ`` (3D).
"""

__version__ = "0.1.0"
