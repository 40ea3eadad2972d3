"""The latent model of LOMPO: encoder, decoder, RSSM with K prior heads, reward and continuation."""

from lompo_core.model.rssm import RSSM, State
from lompo_core.model.world_model import WorldModel

__all__ = ["RSSM", "State", "WorldModel"]
