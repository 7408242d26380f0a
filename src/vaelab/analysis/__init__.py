"""What a trained run says: evaluation, the latent space, figures, samplers, disentanglement."""
