"""GANs: the `gan` task, generator/discriminator models, adversarial losses (`gan_loss`),
and the train_gan / evaluate_gan stage kinds. Light modules only; torch code is imported
when a stage runs (nets, objectives, train, evaluate, export, metrics)."""

from torchkiln.gan import losses, models, stages, task

__all__ = ["losses", "models", "stages", "task"]
