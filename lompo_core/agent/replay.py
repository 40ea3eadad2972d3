"""Where training batches come from: dataset sequences for the model, latent transitions for SAC."""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from lompo_core.data.dataset import Episode, EpisodeDataset
from lompo_core.errors import DatasetError


class SequenceSampler:
    """Uniform windows of ``length`` steps from a subset of a dataset's episodes.

    Episodes are drawn in proportion to their number of windows, so every step is equally likely;
    an episode shorter than ``length`` gives one window padded with ``mask`` = 0. Episodes are
    loaded lazily through a small LRU cache: memory does not grow with the dataset.
    """

    def __init__(
        self,
        dataset: EpisodeDataset,
        indices: list[int],
        length: int,
        seed: int | list[int],
        cache: int = 512,
        still_fraction: float = 0.0,
    ) -> None:
        if not indices:
            raise DatasetError(f"{dataset.root}: no episodes to sample training sequences from")
        self.dataset, self.indices, self.length = dataset, list(indices), length
        lengths = dataset.lengths[self.indices].astype(np.float64)
        self.probs = lengths / lengths.sum()
        self.still_fraction = still_fraction
        self.rng = np.random.default_rng(seed)
        self._cache: OrderedDict[int, Episode] = OrderedDict()
        self._cache_size = max(1, cache)

    def episode(self, index: int) -> Episode:
        ep = self._cache.get(index)
        if ep is None:
            ep = self.dataset.load(index)
            self._cache[index] = ep
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(index)
        return ep

    def window(self, index: int, start: int, length: int) -> dict[str, np.ndarray]:
        ep = self.episode(index)
        t_len = len(ep["image"])
        end = min(start + length, t_len)
        out = {
            k: ep[k][start:end] for k in ("image", "action", "reward", "is_first", "is_terminal")
        }
        out["is_first"] = out["is_first"].copy()
        # A window that starts mid-episode starts the filter from zeros, like an episode start.
        out["is_first"][0] = True
        out["mask"] = np.ones(end - start, np.float32)
        pad = length - (end - start)
        if pad:
            out = {
                k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)])
                for k, v in out.items()
            }
        return out

    def still(self, index: int, step: int) -> dict[str, np.ndarray]:
        """A window in which nothing moves: frame ``step`` of episode ``index`` held for the whole
        window under zero actions, no reward, no terminal. The scene stays where the arm leaves it
        (a velocity command of zero holds the arm, and the drawer does not move by itself), which
        the logs rarely show: the arm in them hardly ever rests."""
        ep = self.episode(index)
        n = self.length
        is_first = np.zeros(n, ep["is_first"].dtype)
        is_first[0] = True
        return {
            "image": np.repeat(ep["image"][step : step + 1], n, axis=0),
            "action": np.zeros((n, *ep["action"].shape[1:]), ep["action"].dtype),
            "reward": np.zeros(n, ep["reward"].dtype),
            "is_first": is_first,
            "is_terminal": np.zeros(n, ep["is_terminal"].dtype),
            "mask": np.ones(n, np.float32),
        }

    def sample(self, batch: int) -> dict[str, np.ndarray]:
        picks = self.rng.choice(len(self.indices), size=batch, p=self.probs)
        items = []
        for p in picks:
            index = self.indices[int(p)]
            t_len = int(self.dataset.lengths[index])
            # A start drawn over the whole episode and clamped to the last full window puts an
            # episode's final frames (its success, its terminal) in a window as often as its
            # middle: uniform starts over T-L+1 windows made them ~20x rarer than the middle,
            # and the reward and continuation heads never learnt success.
            start = min(int(self.rng.integers(0, t_len)), max(t_len - self.length, 0))
            if self.still_fraction and self.rng.random() < self.still_fraction:
                items.append(self.still(index, int(self.rng.integers(0, max(t_len - 1, 1)))))
            else:
                items.append(self.window(index, start, self.length))
        return {k: np.stack([it[k] for it in items]) for k in items[0]}

    def state_dict(self) -> dict[str, Any]:
        return {"rng": json.dumps(self.rng.bit_generator.state)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = json.loads(state["rng"])


def to_torch(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v, device=device) for k, v in batch.items()}


class LatentBuffer:
    """A ring buffer of latent transitions (feat, action, reward, next_feat, terminal), each
    with ``success``: 1 where it comes from a dataset episode that succeeded (else 0, also for
    model rollouts), which a behaviour term restricted to successes reads."""

    FIELDS = ("feat", "action", "reward", "next_feat", "terminal", "success", "first")

    def __init__(self, capacity: int, feat_dim: int, action_dim: int, device: torch.device) -> None:
        self.capacity = int(capacity)
        shapes = {
            "feat": (feat_dim,),
            "action": (action_dim,),
            "reward": (),
            "next_feat": (feat_dim,),
            "terminal": (),
            "success": (),
            "first": (),  # 1 where feat is an episode's first state (dataset transitions only)
        }
        self.data = {k: torch.zeros(self.capacity, *s, device=device) for k, s in shapes.items()}
        self.ptr = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, **items: torch.Tensor) -> None:
        n = len(items["feat"])
        if n > self.capacity:  # only the newest fit
            items = {k: v[-self.capacity :] for k, v in items.items()}
            n = self.capacity
        idx = (torch.arange(n, device=items["feat"].device) + self.ptr) % self.capacity
        for k in self.FIELDS:
            if k in items:
                self.data[k][idx] = items[k].to(self.data[k].dtype)
            else:  # an optional field (success, first): 0
                self.data[k][idx] = 0
        self.ptr = (self.ptr + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int) -> dict[str, torch.Tensor]:
        idx = torch.randint(self.size, (n,), device=self.data["feat"].device)
        return {k: v[idx] for k, v in self.data.items()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "ptr": self.ptr,
            "size": self.size,
            **{k: v[: self.size].clone() for k, v in self.data.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ptr, self.size = int(state["ptr"]), int(state["size"])
        for k in self.FIELDS:
            if k in state:  # a checkpoint from before a field existed leaves it 0
                self.data[k][: self.size] = state[k].to(self.data[k].device)


def cat_batches(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([a[k], b[k]]) for k in a}
