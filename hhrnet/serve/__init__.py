"""Serving hhrnet behind NVIDIA Triton Inference Server.

The served pipeline is the predict pipeline split where a server can batch it:

``hhrnet`` (ensemble, the public model)
    ``image``: encoded image bytes (JPEG, PNG, ...), one per row; ``keypoints (B, P, J, 3)``,
    ``scores (B, P)``, ``people (B, 1)``: poses in image pixels, padded to the request's largest person count.
``hhrnet_preprocess`` (Python backend)
    decodes and checks the bytes (corrupt, truncated, far too large: an error for that request only) and
    letterboxes every image into the same square (the codec's ``letterbox``), so images of any size batch.
``hhrnet_network`` (ONNX Runtime or TensorRT backend; Python backend where neither is available)
    the exported graph (``aggregate``: flip, resize, averaging and projection inside), dynamically batched.
``hhrnet_decode`` (Python backend)
    the Numba decoder on each image's maps, then the inverse letterbox back to image pixels.

Geometry: the official preprocessing gives every image its own input shape, which cannot be batched
across requests. The served codec letterboxes instead (a fixed S x S square around the whole image, S the
export's input size rounded up to 64, or ``--letterbox``); ``hhrnet predict --letterbox S`` on the same
artifact runs exactly this pipeline in-process. The decoder gets each image's size and rebuilds the box
(center, scale) from it, so poses map back to the original pixels exactly as in-process.

Modules: :mod:`~hhrnet.serve.pipeline` (torch-free core the backend models run),
:mod:`~hhrnet.serve.backend` (Triton Python-backend models), :mod:`~hhrnet.serve.repository` (model
repository writer), :mod:`~hhrnet.serve.server` (the bundled Triton server through PyTriton),
:mod:`~hhrnet.serve.client` (tritonclient helpers).
"""
