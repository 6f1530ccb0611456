"""A small, learnable synthetic data set, generated in memory (``--data synthetic``).

Every sample is a pure function of ``(seed, index)``, so runs are reproducible, resumable and identical for
any number of processes. Structure the models can learn:

- each identity has its own low-frequency face pattern; every "photo" of it adds its own noise and lighting;
- the caption picks one word from each of four slots (colour, garment, action, place);
- the training image is drawn from the caption (background = place, band = colour, stripes = garment and
  action) with the identity's face pasted in the middle.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

COLOURS = {"red": (0.9, 0.1, 0.1), "green": (0.1, 0.8, 0.2), "blue": (0.1, 0.2, 0.9), "yellow": (0.9, 0.9, 0.1),
           "purple": (0.6, 0.1, 0.7)}  # fmt: skip
GARMENTS = ["hat", "scarf", "jacket", "shirt", "coat"]
ACTIONS = ["smiling", "reading", "running", "sitting"]
PLACES = {"beach": (0.9, 0.8, 0.5), "forest": (0.1, 0.4, 0.1), "city": (0.5, 0.5, 0.5), "desert": (0.8, 0.6, 0.3),
          "snow": (0.95, 0.95, 1.0)}  # fmt: skip


def caption_for(code: int) -> str:
    """The caption with combination number ``code`` (0 <= code < :func:`num_captions`)."""
    colour, code = list(COLOURS)[code % len(COLOURS)], code // len(COLOURS)
    garment, code = GARMENTS[code % len(GARMENTS)], code // len(GARMENTS)
    action, code = ACTIONS[code % len(ACTIONS)], code // len(ACTIONS)
    place = list(PLACES)[code % len(PLACES)]
    return f"a person in a {colour} {garment} {action} in the {place}"


def hash_word(word: str) -> int:
    """A stable integer for a caption word (Python's ``hash`` changes between runs)."""
    return sum((i + 1) * ord(c) for i, c in enumerate(word))


def num_captions() -> int:
    return len(COLOURS) * len(GARMENTS) * len(ACTIONS) * len(PLACES)


class SyntheticFaceDataset(Dataset):
    """Synthetic (image, caption, reference face, identity) samples.

    Args:
        num_samples: length of the data set.
        num_identities: number of distinct people.
        image_size: side of the training image.
        face_size: side of the aligned reference face.
        seed: draws the samples (photos, captions, noise).
        world_seed: draws the people and the target spaces (default ``seed``); a held-out split uses another
            ``seed`` with the same ``world_seed``: new photos and captions of the same people.
        different_reference_photo: draw the reference face as another photo of the same person.
        target_dims: precomputed targets to attach, by name and width, e.g. ``{"face_l": 512, "text_l": 768,
            "image_l": 768}``. They stand in for frozen encoders with the structure real ones have: a face
            target per person (plus photo noise), a text target that sums one vector per caption word, and an
            image target mixing the caption's and the person's vectors. Random tiny towers give targets that
            are all nearly parallel, which no real encoder does; these keep a smoke run meaningful.
    """

    def __init__(
        self,
        num_samples: int = 512,
        num_identities: int = 16,
        image_size: int = 64,
        face_size: int = 448,
        seed: int = 0,
        different_reference_photo: bool = True,
        target_dims: dict[str, int] | None = None,
        world_seed: int | None = None,
    ):
        if num_samples < 1 or num_identities < 1:
            raise ValueError(
                f"data.synthetic_samples and data.synthetic_identities must be >= 1, got {num_samples}, {num_identities}."
            )
        self.num_samples, self.num_identities = num_samples, num_identities
        self.image_size, self.face_size, self.seed = image_size, face_size, seed
        self.different_reference_photo = different_reference_photo
        self.target_dims = dict(target_dims or {})
        self.world_seed = seed if world_seed is None else world_seed

    def __len__(self) -> int:
        return self.num_samples

    def _generator(self, *parts: int, world: bool = False) -> torch.Generator:
        value = self.world_seed if world else self.seed
        for part in parts:
            value = (value * 1_000_003 + part) % (2**62)
        return torch.Generator().manual_seed(value)

    def _vector(self, name: str, kind: int, item: int, dim: int) -> torch.Tensor:
        g = self._generator(4, sum(map(ord, name)), kind, item, world=True)
        return F.normalize(torch.randn(dim, generator=g), dim=0)

    def targets(self, caption: str, identity: int, index: int) -> dict[str, torch.Tensor]:
        """Precomputed targets of one sample (see ``target_dims``)."""
        out = {}
        words = caption.split()
        slots = [words[4], words[5], words[6], words[-1]]
        g = self._generator(5, index)
        for name, dim in self.target_dims.items():
            space = name.split("_", 1)[1]  # one embedding space per branch: "l" or "g"
            person = self._vector(space, 0, identity, dim)
            text = F.normalize(sum(self._vector(space, 1, hash_word(w), dim) for w in slots), dim=0)
            if name.startswith("face"):
                out[name] = person + 0.3 * torch.randn(dim, generator=g) / dim**0.5
            elif name.startswith("text"):
                out[name] = text
            else:
                out[name] = text + 0.5 * person + 0.1 * torch.randn(dim, generator=g) / dim**0.5
        return out

    def face_photo(self, identity: int, photo: int) -> torch.Tensor:
        """(3, face_size, face_size) in [0, 1]: photo number ``photo`` of person ``identity``."""
        base = torch.rand(3, 6, 6, generator=self._generator(1, identity, world=True))
        g = self._generator(2, identity, photo)
        face = F.interpolate(base[None], size=(self.face_size,) * 2, mode="bilinear", align_corners=False)[0]
        face = face * (0.85 + 0.3 * torch.rand(1, generator=g)) + 0.05 * torch.randn(face.shape, generator=g)
        return face.clamp(0, 1)

    def __getitem__(self, index: int) -> dict:
        g = self._generator(3, index)
        identity = int(torch.randint(self.num_identities, (1,), generator=g))
        code = int(torch.randint(num_captions(), (1,), generator=g))
        caption = caption_for(code)
        words = caption.split()
        s = self.image_size
        image = torch.tensor(PLACES[words[-1]])[:, None, None].expand(3, s, s).clone()
        band = torch.tensor(COLOURS[words[4]])[:, None, None]
        period = 2 + GARMENTS.index(words[5]) + 5 * ACTIONS.index(words[6])
        stripes = (torch.arange(s) % period < period // 2).float()  # (S,)
        image[:, s // 2 :, :] = band * (0.6 + 0.4 * stripes)  # lower half: colour band with garment stripes
        face = self.face_photo(identity, 2 * index)
        small = F.interpolate(face[None], size=(s // 2, s // 2), mode="bilinear", align_corners=False)[0]
        image[:, s // 8 : s // 8 + s // 2, s // 4 : s // 4 + s // 2] = small
        image = (image + 0.02 * torch.randn(image.shape, generator=g)).clamp(0, 1)
        reference = self.face_photo(identity, 2 * index + 1) if self.different_reference_photo else face
        return {
            "index": index,
            "image": image,
            "face": reference,
            "caption": caption,
            "caption_id": code,
            "identity": identity,
            "has_face": True,
            "original_size": (s, s),
            "crop_top_left": (0, 0),
            "targets": self.targets(caption, identity, index),
        }
