"""The paper's Figure 5: ground truth, posterior reconstruction and open-loop prior rollout."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from lompo_core.files import atomic_write_bytes
from lompo_core.model.rssm import State
from lompo_core.model.world_model import WorldModel


def _to_uint8(mean: torch.Tensor) -> np.ndarray:
    """Decoder means [..., 3, 64, 64] in [-0.5, 0.5] -> uint8 [..., 64, 64, 3]."""
    x = (mean.movedim(-3, -1) + 0.5).clamp(0.0, 1.0) * 255.0
    return x.round().to(torch.uint8).cpu().numpy()


@torch.no_grad()
def prediction_rows(
    wm: WorldModel, batch: dict[str, torch.Tensor], context: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For sequences [B, T]: truth, posterior reconstruction, and the ensemble-mean open-loop
    rollout under the logged actions after ``context`` filtered frames (uint8 [B, T, 64, 64, 3])."""
    image, action = batch["image"], batch["action"]
    post = wm.rssm.observe(
        wm.encoder(image), action, batch["is_first"], [0] * image.shape[1], sample=False
    )
    feat = torch.cat([post["stoch"], post["deter"]], -1)
    recon = wm.decoder(feat)
    start = State(post["stoch"][:, context - 1], post["deter"][:, context - 1])
    open_feat = wm.rssm.imagine_mean(start, action[:, context:])
    openloop = torch.cat([recon[:, :context], wm.decoder(open_feat)], 1)
    return image.cpu().numpy(), _to_uint8(recon), _to_uint8(openloop)


def save_figure(path: Path, rows: tuple[np.ndarray, np.ndarray, np.ndarray], context: int) -> None:
    """One block of three rows per sequence; a red line marks where the open-loop part starts."""
    truth, recon, openloop = rows
    b, t = truth.shape[:2]
    size = truth.shape[2]
    gap = 4
    blocks = []
    for i in range(b):
        block = []
        for r, row in enumerate((truth, recon, openloop)):
            strip = np.concatenate(list(row[i]), axis=1)
            if r == 2 and context < t:
                strip = strip.copy()
                strip[:, context * size, :] = (255, 0, 0)
            block.append(strip)
        blocks.append(np.concatenate(block, 0))
        if i < b - 1:
            blocks.append(np.full((gap, t * size, 3), 255, np.uint8))
    grid = np.concatenate(blocks, 0)
    ok, png = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(path), png.tobytes())
