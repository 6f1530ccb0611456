"""Raw photos in: loading, face detection, 5-point ArcFace alignment and identity vectors, offline by default.

>>> from faceclip.face import FaceAnalyzer, load_image, to_tensor
>>> analyzer = FaceAnalyzer()                       # YuNet + SFace bundled with the install
>>> aligned = analyzer.align("photo.jpg")           # 448 x 448 crop on the ArcFace template
>>> faces = to_tensor(aligned.image)[None]          # (1, 3, 448, 448) in [0, 1]
"""

from faceclip.face.analyzer import FaceAnalyzer, NoFaceFoundError
from faceclip.face.image_io import ImageLoadError, load_image
from faceclip.face.model_files import FaceModelNotFoundError
from faceclip.face.tensors import to_tensor
from faceclip.face.types import AlignedFace, DetectedFace

__all__ = [
    "AlignedFace",
    "DetectedFace",
    "FaceAnalyzer",
    "FaceModelNotFoundError",
    "ImageLoadError",
    "NoFaceFoundError",
    "load_image",
    "to_tensor",
]
