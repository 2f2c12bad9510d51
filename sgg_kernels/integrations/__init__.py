"""Drop-in integrations with other libraries; each is an optional extra, imported only on request.

- ``sgg_kernels.integrations.diffusers_sd3`` (``pip install .[diffusers]``): SGG for diffusers'
  StableDiffusion3Pipeline, and a guided Euler step for other flow-matching denoising loops.
"""
