"""The torch Dataset over a decoded data set's arrays (the one module of trainables.data that needs torch;
the package does not import it)."""
from __future__ import annotations

import numpy as np
import torch
from torchvision import tv_tensors


class ArrayDataset(torch.utils.data.Dataset):
    """Samples from the decoded uint8 arrays: (image, label) or (image, mask, label).

    A label is a class index, or a float multi-hot vector for multi-label data.
    """

    def __init__(self, images, labels, indices, transform, masks=None):
        self.images, self.labels, self.masks = images, labels, masks
        self.indices, self.transform = np.asarray(indices), transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        j = int(self.indices[i])
        image = tv_tensors.Image(torch.from_numpy(np.array(self.images[j])).permute(2, 0, 1))
        label = torch.tensor(self.labels[j], dtype=torch.float32) if self.labels.ndim == 2 else int(self.labels[j])
        if self.masks is None:
            return self.transform(image), label
        mask = tv_tensors.Mask(torch.from_numpy(np.array(self.masks[j]))[None])
        image, mask = self.transform(image, mask)
        return image, mask.float(), label
