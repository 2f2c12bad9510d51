"""Drop-in integrations with other libraries; each is an optional extra, imported only on request.

- ``sgg_kernels.integrations.diffusers_guider`` (``pip install .[diffusers]``): ``SGGGuider``, SGG for
  every diffusers modular pipeline that takes a ``guider``; its weak pass is skip-layer hooks
  (``weak_pass``; which blocks of which families, and the published presets: ``skip_layers``) or a
  separate weak model.
- ``sgg_kernels.integrations.diffusers_sd3`` (``pip install .[diffusers]``): a drop-in for the official
  SGG SD3/SD3.5 pipeline on diffusers' StableDiffusion3Pipeline, and a guided Euler step for other
  flow-matching denoising loops.
- ``sgg_kernels.integrations.k_diffusion``: ``SGGDenoiser``, SGG as the denoiser wrapper that
  k-diffusion's samplers take (needs nothing extra; the tests and example use ``.[k-diffusion]``).
"""
