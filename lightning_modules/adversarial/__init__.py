"""The adversarial family: GAN (the seed's objective, DCGAN players), pix2pix and CycleGAN, and the losses and
discriminator step they share (losses.py)."""
