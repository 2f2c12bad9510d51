"""The modular pipelines that docs/diffusers.md and the README say take a `guider` component (so
`SGGGuider` plugs in) do so in the installed diffusers, and Flux.1's, said not to, does not."""
import importlib
import inspect

import pytest

pytest.importorskip("diffusers")
from diffusers.modular_pipelines import ModularPipelineBlocks  # noqa: E402

# The families the docs name, as diffusers' modular_pipelines subpackages.
WITH_GUIDER = ("stable_diffusion_3", "stable_diffusion_xl", "flux2", "qwenimage", "wan", "ltx", "hunyuan_video1_5")
WITHOUT_GUIDER = ("flux",)


def takes_a_guider(family: str) -> bool:
    """Whether any block of the family's modular pipeline declares a component named guider."""
    names = set()
    for module_name in ("denoise", f"modular_blocks_{family}"):
        try:
            module = importlib.import_module(f"diffusers.modular_pipelines.{family}.{module_name}")
        except ModuleNotFoundError:
            continue
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, ModularPipelineBlocks) and cls.__module__ == module.__name__:
                names |= {spec.name for spec in cls().expected_components}
    assert names, f"diffusers.modular_pipelines.{family}: no blocks found (renamed in this diffusers?)"
    return "guider" in names


@pytest.mark.parametrize("family", WITH_GUIDER)
def test_the_named_pipelines_take_a_guider(family):
    assert takes_a_guider(family)


@pytest.mark.parametrize("family", WITHOUT_GUIDER)
def test_flux1_takes_none(family):
    assert not takes_a_guider(family)
