"""The latent policy phase of LOMPO and the trainer that runs both phases."""
