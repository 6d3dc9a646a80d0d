"""deepscope-galaxy: Matching Training Trajectories, its self-adaptive version (STM), Galaxy Zoo 2.

*Discovering Galaxy Features via Dataset Distillation* (Guan, Zhao, Wang, Li & Kempe, NeurIPS 2023
ML4PS workshop, arXiv:2311.17967) distills a curated, class-balanced Galaxy Zoo 2 set with MTT
(Cazenavette et al., CVPR 2022) and a self-adaptive MTT that grows its maximum start epoch and stops
by itself, to show prototype images of galaxy morphologies. Importing this module is cheap:
factories are "module:attr" strings loaded on first use.
"""

from __future__ import annotations

from deepscope import hookimpl

from .configs import MTTConfig, STMConfig


@hookimpl
def deepscope_register_distillers(register):
    register("mtt", "deepscope_galaxy.distiller:MTT", MTTConfig,
             doc="Matching Training Trajectories: N flat-parameter SGD steps from an expert epoch, normalized "
                 "parameter distance to the expert M epochs later, learnable lr, DSA; experts in the cache")
    register("stm", "deepscope_galaxy.distiller:STM", STMConfig,
             doc="Self-adaptive MTT (Guan et al. 2023): M = 1, a start-epoch cap that advances on a Pearson trend "
                 "of the next stage's loss, fine-tuning and an automatic stop")
