"""The ``trades`` trainer: the standard plugin's training loop with the TRADES batch loss."""

from __future__ import annotations

from deepscope_standard import StandardTrainer, hard_labels, record_perturbations

from .trades import trades_loss, trades_perturb


class TradesTrainer(StandardTrainer):
    """TRADES on ``state.model`` in place; the inner maximization runs in mode ``attack_bn``.

    'eval' (default): attack with running BN statistics, then the loss in train
    mode (so adversarial batches never touch the running statistics during the
    attack). 'train': attack with batch statistics. 'reference': eval mode for
    the attack and the loss, reproducing the official code's quirk.
    With ``keep_perturbations`` it keeps the epoch's first x_adv for the
    ``neural-collapse`` probe's ``train_perturbations`` set.
    """

    def batch_loss(self, state, ctx):
        cfg = self.config

        def batch_loss(model, x, y):
            model.train(cfg.attack_bn == "train")
            x_adv = trades_perturb(model, x, eps=cfg.eps, step_size=cfg.step_size, steps=cfg.steps,
                                   norm=cfg.norm, init_std=cfg.init_std, clamp_start=cfg.clamp_start)
            record_perturbations(state, x, x_adv, hard_labels(y), cfg.keep_perturbations)
            model.train(cfg.attack_bn != "reference")
            loss, logits, adv_logits = trades_loss(model, x, x_adv, y, cfg.beta, cfg.label_smoothing)
            labels = hard_labels(y)
            return loss, {"loss": loss.detach() * len(x), "correct": (logits.argmax(1) == labels).sum(),
                          "robust_train_correct": (adv_logits.argmax(1) == labels).sum()}

        return batch_loss
