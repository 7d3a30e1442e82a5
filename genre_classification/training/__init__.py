"""Training stage (workflow/rules/train.smk): tf.data input, augmentation, models, training."""
