"""deepscope-galaxy: Matching Training Trajectories, its self-adaptive version (STM), Galaxy Zoo 2.

*Discovering Galaxy Features via Dataset Distillation* (Guan, Zhao, Wang, Li & Kempe, NeurIPS 2023
ML4PS workshop, arXiv:2311.17967) distills a curated, class-balanced Galaxy Zoo 2 set with MTT
(Cazenavette et al., CVPR 2022) and a self-adaptive MTT that grows its maximum start epoch and stops
by itself, to show prototype images of galaxy morphologies. Importing this module is cheap:
factories are "module:attr" strings loaded on first use.
"""

from __future__ import annotations

from deepscope import DataShape, hookimpl

from .configs import GZoo2CatalogueConfig, GZoo2Config, MTTConfig, PrototypeGridConfig, STMConfig

GZOO2_CLASSES = 9


def _gzoo2_shape(name):
    def shape(config):
        return DataShape(name, GZOO2_CLASSES, (3, config.size, config.size))

    return shape


@hookimpl
def deepscope_register_distillers(register):
    register("mtt", "deepscope_galaxy.distiller:MTT", MTTConfig,
             doc="Matching Training Trajectories: N flat-parameter SGD steps from an expert epoch, normalized "
                 "parameter distance to the expert M epochs later, learnable lr, DSA; experts in the cache")
    register("stm", "deepscope_galaxy.distiller:STM", STMConfig,
             doc="Self-adaptive MTT (Guan et al. 2023): M = 1, a start-epoch cap that advances on a Pearson trend "
                 "of the next stage's loss, fine-tuning and an automatic stop")


@hookimpl
def deepscope_register_probes(register):
    register("prototype-grid", "deepscope_galaxy.prototypes:PrototypeGrid", PrototypeGridConfig,
             doc="the synthetic images as class-labelled prototypes (MTT's 2.5-sigma clipping), one figure and "
                 "one image per class")


@hookimpl
def deepscope_register_datasets(register):
    register("gzoo2", "deepscope_galaxy.gzoo2:load_gzoo2", GZoo2Config,
             doc="the curated Galaxy Zoo 2 folders (9 classes, 500/100 per class, central half-crop, 128x128)",
             shape=_gzoo2_shape("gzoo2"))
    register("gzoo2-catalogue", "deepscope_galaxy.gzoo2:load_gzoo2_catalogue", GZoo2CatalogueConfig,
             doc="builds the curated GZ2 folders from the catalogue table and a JPEG directory, then loads them",
             shape=_gzoo2_shape("gzoo2-catalogue"))
